#!/usr/bin/env bash
# Issue 6 on a GPU host with no network: install the offline bundle, build the torch-runtime
# repository of bench/torch_h100.yaml, run the GPU tests, then measure every model of it over gRPC
# with `plugserve bench`, each kernel model right beside its pure-PyTorch twin.
#
#   make bundle BUNDLE_PYTHON=3.12           # here, with the network: dist/bundle-py3.12
#   OUT=<dir> bash scripts/device_torch_bench.sh        # there, in the repository root
#
# Writes into $OUT (at most 8 files): bench.log (everything printed), gpu-tests.log, table.md (the
# side-by-side table), results.tgz (the bench JSON/CSV files) and tritonserver.log.
# Extra wheels in .whl/ (e.g. pytest, which the host may lack) are installed with the bundle.
# STAGES picks what runs after the build: tests (GPU tests), pairs (the measurements the issue asks
# for), extra (the same pairs through system shared memory, and our kernels without CUDA graphs),
# reversed (the pairs again, each PyTorch twin first, to see order and run-to-run effects; and the
# fp32 pair through shared memory), repeat (the super-resolution pair in three rounds of longer
# steps, alternating which twin goes first: their difference is under the spread of one round),
# analyzer (issue 14: the fp16 pairs measured by perf_analyzer over gRPC + CUDA shm, gRPC + system
# shm and plain gRPC at c=1 and c=8, each cross-checked by our Python sender; over CUDA shm that
# needs cuda-python, which the host's image has).
# ANALYZER_MEMORY: the transports of the analyzer stage (default "cuda system none").
# PERF_ANALYZER_TAR: a tar.xz of bin/perf_analyzer and lib/perf_analyzer/ as `make perf-analyzer`
# lays them out in .venv; BUILD_MODELS: build only these models of bench/torch_h100.yaml.
set -uo pipefail
STAGES=${STAGES:-tests pairs extra}
OUT=${OUT:-$PWD/bench/results/device}
BUNDLE=${BUNDLE:-dist/bundle-py3.12}
REPOSITORY=${REPOSITORY:-/tmp/plugserve-torch-repository}
RESULTS=${RESULTS:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/bench.log") 2>&1
step() { echo "== $(date -u +%T) $*"; }

step "install the bundle ($BUNDLE)"
PYTHON=$PYTHON bash "$BUNDLE/install.sh" || exit 1
# shellcheck source=/dev/null
. "$BUNDLE/env.sh"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --force-reinstall .whl/*.whl || exit 1
fi
if [[ -n ${PERF_ANALYZER_TAR:-} ]]; then
  mkdir -p /tmp/perf_analyzer && tar -xJf "$PERF_ANALYZER_TAR" -C /tmp/perf_analyzer || exit 1
  export PLUGSERVE_PERF_ANALYZER=/tmp/perf_analyzer/bin/perf_analyzer
  "$PLUGSERVE_PERF_ANALYZER" --version || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# What the python backend stub needs from the host: libpython of this version, and room in /dev/shm.
ls "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"/libpython3*.so* 2>&1 | head -3
df -h /dev/shm | tail -1
"$PYTHON" -c "import sys, torch, numpy; from plugserve import native; print('python', sys.version.split()[0], \
'torch', torch.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name()); print(native.build_info())" || exit 1

has() { [[ " $STAGES " == *" $1 "* ]]; }
if has tests; then
  step "GPU tests"
  timeout 300 "$PYTHON" -m pytest -m gpu tests/gpu/test_torch_runtime.py -q -p no:cacheprovider -o addopts="" \
    2>&1 | tee "$OUT/gpu-tests.log"
fi
has pairs || has extra || has reversed || has repeat || has analyzer || exit 0

step "build $REPOSITORY from bench/torch_h100.yaml"
rm -rf "$REPOSITORY"
"$PYTHON" -m plugserve.cli build --config bench/torch_h100.yaml --repository "$REPOSITORY" \
  $(for model in ${BUILD_MODELS:-}; do echo --model "$model"; done) || exit 1

step "serve"
# GPU outputs go from the runner to the server through Triton's CUDA memory pool; the default 64 MiB
# is smaller than one batch of encoder outputs (8 x 22 MiB), which would fall back to CUDA IPC.
"$PYTHON" -m plugserve.cli serve --repository "$REPOSITORY" --log "$OUT/tritonserver.log" --startup-timeout 400 \
  --allow-shared-memory --server-arg=--cuda-memory-pool-byte-size=0:4294967296 &
SERVER=$!
finish() {  # whatever happened: stop the server, keep what was measured
  kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null
  step "table"
  "$PYTHON" scripts/torch_bench_table.py "$RESULTS" | tee "$OUT/table.md"
  tar -czf "$OUT/results.tgz" -C "$RESULTS" .
  step done
}
trap finish EXIT
ready() { "$PYTHON" -c "import urllib.request as u; u.urlopen('http://localhost:8000/v2/health/ready', timeout=2)" 2>/dev/null; }
for _ in $(seq 400); do
  ready && break
  kill -0 $SERVER 2>/dev/null || { echo "server exited"; tail -40 "$OUT/tritonserver.log"; exit 1; }
  sleep 1
done
ready || { echo "server not ready"; tail -40 "$OUT/tritonserver.log"; exit 1; }
nvidia-smi --query-gpu=memory.used --format=csv,noheader

bench() {  # model, extra bench arguments...
  local model=$1; shift
  step "bench $model $*"
  timeout 90 "$PYTHON" -m plugserve.cli bench --url localhost:8001 --protocol grpc --model "$model" \
    --repository "$REPOSITORY" --concurrency 1,8 --warmup 2 --max-step-time 8 --results "$RESULTS" \
    --tag h100 "$@"
  tar -czf "$OUT/results.tgz" -C "$RESULTS" .  # after each run: what was measured comes back even if cut off
}
SR=(--shape image=3,256,256 --input size=1024,1024)
DEFORMABLE=(--shape image=3,800,1333)
if has pairs; then
  bench super_resolution_fp16 "${SR[@]}"
  bench super_resolution_fp16_pytorch "${SR[@]}"
  bench deformable_encoder_fp16 "${DEFORMABLE[@]}"
  bench deformable_encoder_fp16_pytorch "${DEFORMABLE[@]}"
  bench deformable_encoder_fp32 "${DEFORMABLE[@]}"
  bench deformable_encoder_fp32_pytorch "${DEFORMABLE[@]}"
fi
if has extra; then
  bench deformable_encoder_fp16_eager "${DEFORMABLE[@]}"
  # The pairs with tensors in system shared memory: what is left when gRPC stops copying them.
  bench super_resolution_fp16 "${SR[@]}" --shared-memory system
  bench super_resolution_fp16_pytorch "${SR[@]}" --shared-memory system
  bench deformable_encoder_fp16 "${DEFORMABLE[@]}" --shared-memory system
  bench deformable_encoder_fp16_pytorch "${DEFORMABLE[@]}" --shared-memory system
fi
if has reversed; then
  for pair in super_resolution_fp16 deformable_encoder_fp16 deformable_encoder_fp32; do
    if [[ $pair == super* ]]; then shape=("${SR[@]}"); else shape=("${DEFORMABLE[@]}"); fi
    bench "${pair}_pytorch" "${shape[@]}" --tag h100-reversed
    bench "$pair" "${shape[@]}" --tag h100-reversed
  done
  bench deformable_encoder_fp32_pytorch "${DEFORMABLE[@]}" --shared-memory system
  bench deformable_encoder_fp32 "${DEFORMABLE[@]}" --shared-memory system
fi
if has analyzer; then
  # Short steps: 0.5 s windows, at most 3 s of them; CUDA shm first, the transport the targets are set on.
  QUICK=(--engine perf_analyzer --window 0.5 --max-step-time 3 --warmup 1 --tag h200-analyzer)
  for memory in ${ANALYZER_MEMORY:-cuda system none}; do
    check=(--cross-check)
    if [[ $memory == cuda ]] && ! "$PYTHON" -c "import cuda.bindings.runtime" 2>/dev/null; then
      echo "no cuda-python here: the CUDA shm steps are not cross-checked by our sender"; check=()
    fi
    for model in super_resolution_fp16 super_resolution_fp16_pytorch deformable_encoder_fp16 \
                 deformable_encoder_fp16_pytorch; do
      if [[ $model == super* ]]; then shape=("${SR[@]}"); else shape=("${DEFORMABLE[@]}"); fi
      bench "$model" "${shape[@]}" --shared-memory "$memory" "${QUICK[@]}" "${check[@]}"
    done
  done
fi
if has repeat; then
  for round in 1 2 3; do
    order=(super_resolution_fp16 super_resolution_fp16_pytorch)
    (( round % 2 == 0 )) && order=(super_resolution_fp16_pytorch super_resolution_fp16)
    for model in "${order[@]}"; do bench "$model" "${SR[@]}" --window 3 --max-step-time 20 --tag "h100-round$round"; done
  done
fi
