#!/usr/bin/env python3
"""Make an offline bundle: everything `plugserve serve` needs on a GPU host with no network and
another Python than this one, beyond the host's own PyTorch and numpy.

    python scripts/bundle.py --python 3.12 --out dist/bundle-py3.12      (what `make bundle` runs)

The bundle holds
  tritonserver.tar.xz   the server of the nvidia-pytriton wheel, cut to what it loads: the binary,
                        the python backend, the stub for the target Python, the shared libraries
                        these three resolve from the wheel's `nvidia_pytriton.libs` (no repository
                        agents or caches the server never loads), compressed;
  wheels/               the plugserve wheel and the client/serving wheels for the target Python
                        (tritonclient[grpc,http], pyyaml and their dependencies, except those the
                        host's PyTorch already brings: torch, numpy);
  lib/libplugserve.so   the plugin library (kernels for the GPU, CPU code, C ABI);
  install.sh            installs the wheels into the host's Python (no index), unpacks the server
                        and writes env.sh with $TRITONSERVER and $PLUGSERVE_PLUGIN_LIBRARY.

Only the wheel's own server is cut down; nothing is patched. The wheels come from `pip download`
for the target's Python version and platform, so this step needs the package index once, here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Packages the bundle leaves to the host: a GPU host's PyTorch comes with both, built for its CUDA.
HOST_PROVIDED = ("torch", "numpy")
REQUIREMENTS = ("tritonclient[grpc,http]", "pyyaml")
# manylinux tags pip may take for the target (pip matches each tag exactly).
PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")

INSTALL_SH = """#!/usr/bin/env bash
# Install this bundle with no network: the wheels into $PYTHON's environment (default python3,
# which must be Python {python} with PyTorch), the server into ./server; then `. ./env.sh`.
set -euo pipefail
here=$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)
PYTHON=${{PYTHON:-python3}}
have=$("$PYTHON" -c 'import sys; print(f"{{sys.version_info[0]}}.{{sys.version_info[1]}}")')
if [[ "$have" != "{python}" ]]; then
  echo "install.sh: this bundle is for Python {python}, $PYTHON is $have (make bundle BUNDLE_PYTHON=$have)" >&2
  exit 2
fi
"$PYTHON" -c 'import torch, numpy' || {{ echo "install.sh: $PYTHON needs torch and numpy installed" >&2; exit 2; }}
# plugserve without its build-time dependencies (exporters, ONNX, the full pytriton): serving needs none.
"$PYTHON" -m pip install -q --no-index --no-deps "$here"/wheels/plugserve-*.whl
"$PYTHON" -m pip install -q --no-index --find-links "$here/wheels" {requirements}
mkdir -p "$here/server"
tar -xJf "$here/tritonserver.tar.xz" -C "$here/server"
cat > "$here/env.sh" <<EOF
export TRITONSERVER=$here/server/pytriton/tritonserver/bin/tritonserver
export PLUGSERVE_PLUGIN_LIBRARY=$here/lib/libplugserve.so
EOF
echo "install.sh: done; now: . $here/env.sh && plugserve serve --repository <dir>"
"""


def run(*command: str | Path) -> None:
    subprocess.run([str(c) for c in command], check=True)


def pytriton_root() -> Path:
    """The installed nvidia-pytriton (the wheel's files, unpacked): holds pytriton/ and nvidia_pytriton.libs/."""
    try:
        files = metadata.distribution("nvidia-pytriton").locate_file("")
    except metadata.PackageNotFoundError:
        raise SystemExit("bundle: nvidia-pytriton is not installed here (pip install nvidia-pytriton)") from None
    root = Path(str(files))
    if not (root / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file():
        raise SystemExit(f"bundle: no pytriton/tritonserver/bin/tritonserver under {root}")
    return root


def wheel_libraries(binaries: list[Path], libs_dir: Path) -> set[str]:
    """The files of `libs_dir` that the binaries load, directly or through each other (by ldd)."""
    found: set[str] = set()
    pending = list(binaries)
    while pending:
        output = subprocess.run(["ldd", str(pending.pop())], capture_output=True, text=True).stdout
        for line in output.splitlines():
            parts = line.split("=>")
            if len(parts) != 2 or not parts[1].split():
                continue
            resolved = Path(parts[1].split()[0]).resolve()
            if resolved.parent == libs_dir.resolve():
                name = resolved.name
                if name not in found:
                    found.add(name)
                    pending.append(libs_dir / name)
    return found


def pack_server(python: str, out: Path) -> Path:
    root = pytriton_root()
    home = Path("pytriton") / "tritonserver"
    stub = home / "python_backend_stubs" / python / "triton_python_backend_stub"
    if not (root / stub).is_file():
        have = sorted(p.name for p in (root / home / "python_backend_stubs").iterdir())
        raise SystemExit(f"bundle: nvidia-pytriton has no python backend stub for Python {python} (has {have})")
    members = [home / "bin" / "tritonserver", home / "backends" / "python" / "libtriton_python.so",
               home / "backends" / "python" / "triton_python_backend_utils.py", stub]
    libs = root / "nvidia_pytriton.libs"
    members += [Path("nvidia_pytriton.libs") / name for name in sorted(wheel_libraries([root / m for m in members], libs))]
    target = out / "tritonserver.tar.xz"
    with tarfile.open(target, "w:xz", preset=6) as archive:
        for member in members:
            archive.add(root / member, arcname=str(member))
    return target


def download_wheels(python: str, wheels: Path) -> None:
    version = metadata.version("tritonclient")
    # The client this environment was tested with.
    requirements = [f"{r}=={version}" if r.startswith("tritonclient") else r for r in REQUIREMENTS]
    platform_args = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    run(sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python,
        "--implementation", "cp", *platform_args, "-d", wheels, *requirements)
    for wheel in wheels.glob("*.whl"):
        if wheel.name.split("-")[0].lower() in HOST_PROVIDED:
            wheel.unlink()


def build_project_wheel(wheels: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", scratch, ROOT)
        for wheel in Path(scratch).glob("plugserve-*.whl"):
            shutil.move(str(wheel), wheels / wheel.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="the target host's Python, MAJOR.MINOR (default: this one's, %(default)s)")
    parser.add_argument("--out", type=Path, help="bundle directory (default: dist/bundle-py<PYTHON>)")
    parser.add_argument("--plugin-library", type=Path, default=ROOT / "plugins" / "build" / "libplugserve.so",
                        help="libplugserve.so to include (default: %(default)s; build it with `make plugins`)")
    args = parser.parse_args(argv)
    if not args.plugin_library.is_file():
        raise SystemExit(f"bundle: {args.plugin_library} does not exist; run `make plugins` first")
    out = args.out or ROOT / "dist" / f"bundle-py{args.python}"
    if out.exists():
        shutil.rmtree(out)
    (out / "wheels").mkdir(parents=True)
    (out / "lib").mkdir()

    print(f"bundle: server for Python {args.python} ...", flush=True)
    pack_server(args.python, out)
    print("bundle: wheels ...", flush=True)
    download_wheels(args.python, out / "wheels")
    build_project_wheel(out / "wheels")
    shutil.copy2(args.plugin_library, out / "lib" / "libplugserve.so")
    install = out / "install.sh"
    install.write_text(INSTALL_SH.format(python=args.python, requirements=" ".join(f"'{r}'" for r in REQUIREMENTS)))
    install.chmod(install.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"bundle: {out} ({size / 2**20:.1f} MiB); on the host: bash {os.path.relpath(install)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
