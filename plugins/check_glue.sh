#!/usr/bin/env bash
# Check of the TensorRT glue for machines without TensorRT. For each TensorRT header set:
# compiles the glue with -Wall -Wextra -Werror, links it into a throwaway shared object with the
# library's version script and checks what it exports and what it needs; then, when the kernels
# are built (make plugins), links tests/plugins/trt_glue_check.cpp with the glue and the kernels
# and runs it (creators, fields, formats, shape checks, error reports; no GPU needed), and links
# the harness (harness/: the ONNX parser's, builder's and runtime's calls on described plugin
# nodes, driven by `plugserve check-plugins`) into build/harness/<version>/plugserve_harness.
#
#   plugins/check_glue.sh                   every header set under .tensorrt/*/include
#   plugins/check_glue.sh DIR [DIR...]      the given include directories
#
# Header sets come from the NVIDIA/TensorRT repository (never committed), e.g.
#   git -C <TensorRT clone> archive release/10.13 include | tar -x -C .tensorrt/10.13/
# The tests (tests/plugins/conftest.py) also look in ~/.cache/plugserve/tensorrt-headers/<version>/include
# ($PLUGSERVE_TENSORRT_HEADERS), so every checkout of a machine, CI's fresh clone too, finds one copy.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
CXX=${CXX:-g++}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

if [ $# -gt 0 ]; then
    dirs=("$@")
else
    shopt -s nullglob
    dirs=(../.tensorrt/*/include)
    shopt -u nullglob
fi
if [ ${#dirs[@]} -eq 0 ]; then
    echo "check_glue: no TensorRT headers under .tensorrt/*/include; give include directories as arguments" >&2
    exit 2
fi

# The same sources the Makefile treats as glue, and the kernel objects it builds.
glue=(*/plugin.cpp common/plugin_*.cpp registry.cpp)
shopt -s nullglob
kernels=()
for obj in build/*/*.o; do
    case "$obj" in build/capi/* | build/ort/* | */plugin.o | build/common/*) ;; *) kernels+=("$obj") ;; esac
done
shopt -u nullglob
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for dir in "${dirs[@]}"; do
    version=$(sed -n 's/^#define TRT_\(MAJOR\|MINOR\|PATCH\)_ENTERPRISE \([0-9]*\).*/\2/p' "$dir/NvInferVersion.h" | paste -sd.)
    echo "== TensorRT ${version:-?} headers: $dir"
    objs=()
    for src in "${glue[@]}"; do
        obj="$work/$version/${src//\//_}.o"
        mkdir -p "$(dirname "$obj")"
        "$CXX" -std=c++17 -O2 -fPIC -fvisibility=hidden -Wall -Wextra -Werror \
            -I. -I"$CUDA_HOME/include" -isystem "$dir" -c "$src" -o "$obj"
        objs+=("$obj")
    done
    echo "   compiled with -Wall -Wextra -Werror: ${glue[*]}"

    # libnvinfer and the kernels are not linked here; every other symbol must resolve.
    so="$work/$version/libglue.so"
    "$CXX" -shared -o "$so" "${objs[@]}" -Wl,--version-script=exports.map -Wl,--unresolved-symbols=ignore-all
    exported=$(nm -D --defined-only "$so" | awk '{print $3}' | sort | paste -sd' ')
    if [ "$exported" != "getCreators setLoggerFinder" ]; then
        echo "   FAIL: exports '$exported', expected 'getCreators setLoggerFinder'" >&2
        exit 1
    fi
    echo "   exports: $exported"
    unexpected=$(nm -D --undefined-only "$so" | awk '{print $2}' | grep -v '@' | c++filt |
        grep -v -E '^(getPluginRegistry|plugserve::(dynamic_resize|ms_deform_attn)::|_ITM_|__gmon_start__|__cxa_pure_virtual$|transaction clone for )' || true)
    if [ -n "$unexpected" ]; then
        echo "   FAIL: undefined symbols neither in libnvinfer nor in the kernels:" >&2
        echo "$unexpected" | sed 's/^/     /' >&2
        exit 1
    fi
    echo "   needs from outside the glue: getPluginRegistry (libnvinfer), plugserve kernel API"

    if [ ${#kernels[@]} -eq 0 ]; then
        echo "   behaviour check skipped: no kernel objects in plugins/build (run make plugins)"
        continue
    fi
    check="$work/$version/trt_glue_check"
    "$CXX" -std=c++17 -O1 -Wall -Wextra -Werror -I. -I"$CUDA_HOME/include" -isystem "$dir" \
        -c ../tests/plugins/trt_glue_check.cpp -o "$check.o"
    # registry.cpp needs libnvinfer's registry; the check drives the creators directly.
    "$CXX" -o "$check" "$check.o" $(printf '%s\n' "${objs[@]}" | grep -v '/registry.cpp.o$') "${kernels[@]}" \
        -L"$CUDA_HOME/lib64" -lcudart_static -ldl -lpthread -lrt
    if ! result=$("$check"); then
        echo "$result" | sed 's/^/   /' >&2
        exit 1
    fi
    echo "   behaviour check: $result"

    harness_dir=build/harness/$version
    mkdir -p "$harness_dir"
    harness_objs=()
    for src in harness/*.cpp; do
        obj="$work/$version/${src//\//_}.o"
        "$CXX" -std=c++17 -O1 -Wall -Wextra -Werror -I. -I"$CUDA_HOME/include" -isystem "$dir" -c "$src" -o "$obj"
        harness_objs+=("$obj")
    done
    "$CXX" -o "$harness_dir/plugserve_harness" "${harness_objs[@]}" \
        $(printf '%s\n' "${objs[@]}" | grep -v '/registry.cpp.o$') "${kernels[@]}" \
        -L"$CUDA_HOME/lib64" -lcudart_static -ldl -lpthread -lrt
    echo "   harness: plugins/$harness_dir/plugserve_harness"
done
