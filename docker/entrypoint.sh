#!/usr/bin/env bash
# Container start: build TensorRT engines for this GPU unless valid ones exist, then serve them.
# An engine is valid when its manifest matches this TensorRT, this GPU and this plugin library
# (plugserve.trt.provenance.stale_engines); the repository lives on a volume, so restarts reuse them.
# Any arguments replace serving, e.g. `docker compose run plugserve make test-tensorrt`.
set -euo pipefail

if [[ $# -gt 0 ]]; then
    exec "$@"
fi

repository="${PLUGSERVE_REPOSITORY:-/var/lib/plugserve/model_repository}"
models="${PLUGSERVE_MODELS:-super_resolution deformable_encoder}"
read -r -a to_build <<<"$(python - "${repository}" ${models} <<'PY'
import sys
from pathlib import Path

from plugserve import native
from plugserve.trt import environment, provenance

repository = Path(sys.argv[1])
repository.mkdir(parents=True, exist_ok=True)
present = environment.detect_environment(native.library_path())
print(" ".join(provenance.models_to_build(repository, sys.argv[2:], present)))
PY
)"

for model in "${to_build[@]}"; do
    echo "entrypoint: building the TensorRT engine of ${model} for this GPU"
    plugserve build --runtime tensorrt --repository "${repository}" --model "${model}" --keep 2
done
# tritonserver's log goes beside the repository, on the volume: docker compose exec plugserve tail -f it.
# Every interface inside the container, for Docker's port publishing to reach it; compose.yaml
# publishes the ports on the host's 127.0.0.1 only.
exec plugserve serve --host 0.0.0.0 --repository "${repository}" --log "${repository%/*}/tritonserver.log"
