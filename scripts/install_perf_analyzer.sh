#!/usr/bin/env bash
# Install NVIDIA's perf_analyzer into a virtual environment from package registries, nothing system-wide:
#   bash scripts/install_perf_analyzer.sh .venv
# The binary comes from the tritonclient 2.50.0 wheel (the newest reachable wheel that carries it), its
# libraries from the nvidia-cuda-runtime-cu12 wheel (libcudart.so.12) and Debian's libb64-0d
# (libb64.so.0d, unpacked with dpkg -x). They go to VENV/lib/perf_analyzer/; VENV/bin/perf_analyzer
# is a wrapper that sets the library path. Where a piece cannot be had, this says so in one line and
# exits 0: `plugserve bench` then measures with its own sender, and `make test` goes on.
set -uo pipefail
VENV=${1:-.venv}
PIP=${PIP:-$VENV/bin/pip}
DEST=$VENV/lib/perf_analyzer
WRAPPER=$VENV/bin/perf_analyzer
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
skip() { echo "perf_analyzer: not installed ($*); plugserve bench will use its own sender"; exit 0; }

"$PIP" download -q --no-deps -d "$work" tritonclient==2.50.0 nvidia-cuda-runtime-cu12 2>"$work/pip.log" \
  || skip "pip download failed: $(tail -1 "$work/pip.log")"
command -v dpkg >/dev/null || skip "no dpkg to unpack Debian's libb64-0d"
# apt-get download reads the package lists as they are; stale or missing lists fail it, and only then
# is an update worth its time (as root; otherwise with private lists that need no root).
fetch_libb64() { (cd "$work" && apt-get download -q libb64-0d >/dev/null 2>&1); }
if ! fetch_libb64; then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq >/dev/null 2>&1
  else
    mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
    apt-get update -qq -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache" >/dev/null 2>&1
    fetch_libb64() { (cd "$work" && apt-get download -q -o Dir::State::Lists="$work/apt/lists" \
      -o Dir::Cache="$work/apt/cache" libb64-0d >/dev/null 2>&1); }
  fi
  fetch_libb64 || skip "apt-get download libb64-0d failed"
fi

rm -rf "$DEST" && mkdir -p "$DEST/bin" "$DEST/lib"
"$VENV/bin/python" - "$work" "$DEST" <<'PY' || skip "the wheels lack the expected files"
import sys, zipfile, pathlib
work, dest = map(pathlib.Path, sys.argv[1:])
members = {"tritonclient-*.whl": ("tritonclient-2.50.0.data/data/bin/perf_analyzer", "bin"),
           "nvidia_cuda_runtime_cu12-*.whl": ("nvidia/cuda_runtime/lib/libcudart.so.12", "lib")}
for pattern, (member, folder) in members.items():
    (wheel,) = work.glob(pattern)
    target = dest / folder / pathlib.Path(member).name
    target.write_bytes(zipfile.ZipFile(wheel).read(member))
    target.chmod(0o755)
PY
dpkg -x "$work"/libb64-0d_*.deb "$work/libb64" && cp -L "$(find "$work/libb64" -name 'libb64.so.0d' | head -1)" "$DEST/lib/" \
  || skip "libb64.so.0d not found in the Debian package"
cat > "$WRAPPER" <<'SH'
#!/usr/bin/env bash
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib/perf_analyzer" && pwd)
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/bin/perf_analyzer" "$@"
SH
chmod +x "$WRAPPER"
# The version it prints is empty; that it runs at all shows every library resolved.
"$WRAPPER" --version >/dev/null 2>&1 || { rm -rf "$DEST" "$WRAPPER"; skip "it does not run here"; }
echo "perf_analyzer: installed in $DEST (run it as $WRAPPER)"
