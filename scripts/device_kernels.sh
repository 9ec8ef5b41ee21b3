#!/usr/bin/env bash
# bench/kernels.py's issue on a GPU host with no network: build libplugserve.so and the
# torch-ms-deform-attn peer (PyPI sdist 0.1.1), run the GPU kernel tests, compute-sanitizer
# memcheck and racecheck over them, and the benchmark with every peer.
#
#   OUT=<dir> PEER_SDIST=<torch_ms_deform_attn-0.1.1.tar.gz> bash scripts/device_kernels.sh
#
# STAGES picks what runs: tests, bench, sanitize (each tool limited to $SANITIZE_TIMEOUT s), and ab (bench/kernels.py --ab over the
# libplugserve.so builds in $AB_DIR/*/, our kernels only, interleaved, before anything else).
# Writes into $OUT: device.log (everything printed), kernels.json, kernels.png, ab-kernels.json.
set -uo pipefail
STAGES=${STAGES:-tests sanitize bench}
OUT=${OUT:-$PWD/bench/results/device}
PYTHON=${PYTHON:-python3}
PEER_SITE=/tmp/peer/site
mkdir -p "$OUT"
exec > >(tee "$OUT/device.log") 2>&1
step() { echo "== $(date -u +%T) $*"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
if has bench && [ -n "${PEER_SDIST:-}" ]; then
  step "build the peer in the background"
  ( rm -rf /tmp/peer && mkdir -p /tmp/peer && tar -xzf "$PEER_SDIST" -C /tmp/peer &&
    cd /tmp/peer/torch_ms_deform_attn-* && TORCH_CUDA_ARCH_LIST=9.0 FORCE_CUDA=1 MAX_JOBS=8 \
    "$PYTHON" -m pip install -q --no-build-isolation --no-deps --target "$PEER_SITE" . ) >/tmp/peer.log 2>&1 &
  PEER_BUILD=$!
fi
step "build libplugserve.so"
make -C plugins -j8 2>&1 | tail -1 || exit 1
if has ab; then
  step "A/B: ${AB_DIR}/*"
  "$PYTHON" bench/kernels.py --ab "$AB_DIR"/*/libplugserve.so --rounds "${AB_ROUNDS:-2}" --out "$OUT"
fi
TESTS=(-m gpu tests/gpu/test_kernels.py -q -p no:cacheprovider -o addopts="")
if has tests; then
  step "GPU kernel tests"
  timeout 300 "$PYTHON" -m pytest "${TESTS[@]}" 2>&1 | tail -5
fi
if has bench; then
  PEER_ARG=()
  if [ -n "${PEER_BUILD:-}" ]; then
    step "wait for the peer"
    if wait "$PEER_BUILD"; then PEER_ARG=(--peer-path "$PEER_SITE"); else tail -20 /tmp/peer.log; fi
  fi
  step "bench/kernels.py ${PEER_ARG[*]}"
  "$PYTHON" bench/kernels.py "${PEER_ARG[@]}" --out "$OUT"
fi
if has sanitize; then
  step "compute-sanitizer memcheck"
  timeout "${SANITIZE_TIMEOUT:-150}" compute-sanitizer --tool memcheck --error-exitcode 9 "$PYTHON" -m pytest "${TESTS[@]}" -k "not large" \
    2>&1 | tail -6; echo "memcheck rc=${PIPESTATUS[0]}"
  step "compute-sanitizer racecheck"
  timeout "${SANITIZE_TIMEOUT:-150}" compute-sanitizer --tool racecheck --error-exitcode 9 "$PYTHON" -m pytest "${TESTS[@]}" -k "not large" \
    2>&1 | tail -6; echo "racecheck rc=${PIPESTATUS[0]}"
fi
step done
