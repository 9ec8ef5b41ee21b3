"""`plugserve <command>`: each command lives in the module that does the work.

Modules are imported only for the command that runs, so `plugserve --help` and
`plugserve <command> --help` work without torch or TensorRT installed. A command module
defines `add_<command>_arguments(parser)` and `run_<command>(args) -> int`.

Expected failures are typed exceptions that the commands raise; `main` turns each into one line
and the exit code of its class (FAILURES), and prints the traceback only under `-v`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from pathlib import Path

from plugserve import __version__, console, native, server

COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("plugserve.export", "export a model from its checkpoint to ONNX"),
    "pluginize": ("plugserve.surgery", "rewrite Resize and legacy plugin nodes into plugserve plugin nodes"),
    "decompose": ("plugserve.surgery", "rewrite plugserve plugin nodes into standard ONNX ops"),
    "init": ("plugserve.onnx_io", "write a models.yaml entry from an ONNX file, for you to edit"),
    "build": ("plugserve.build", "build model_repository/<model>/<version>/ from models.yaml"),
    "serve": ("plugserve.serve", "run tritonserver on a model repository"),
    "infer": ("plugserve.client", "send a request to a served model and optionally check it"),
    "demo": ("plugserve.demo", "export, build, serve and verify both headline models"),
    "bench": ("plugserve.perf.cli", "perf sweeps over concurrency or request rate"),
    "report": ("plugserve.report", "write a Markdown report with plots from bench/results/"),
    "check-plugins": ("plugserve.check_plugins", "each plugin node through TensorRT's parser, builder and runtime"),
}

# Exception class (by module and name, so that matching imports nothing heavy) -> exit code and
# what to do about it. The first class in an exception's MRO that is listed decides.
# Exit 1 stays "the command ran and its check failed" (infer --check), 2 argparse's usage errors.
FAILURES: dict[str, tuple[int, str]] = {
    "plugserve.console.UsageError": (2, "see the command's --help"),
    "plugserve.config.ConfigError": (3, "fix the file or option named above"),
    "builtins.FileNotFoundError": (4, "check the path"),
    "plugserve.lowering.RuntimeUnavailable": (5, "install what is missing, or pick another --runtime"),
    "plugserve.trt.environment.TensorRTUnavailable": (5, "use the NGC TensorRT image, or --runtime onnxruntime"),
    "plugserve.client.ClientUnavailable": (6, "start one with `plugserve serve`, or pass --url"),
    "plugserve.repository_api.ServerUnreachable": (6, "start one with `plugserve serve`"),
    "plugserve.client.RequestRefused": (7, "see `plugserve build` for what the repository holds"),
    "plugserve.repository_api.LoadRefused": (7, "see the server log"),
    "plugserve.perf.load.SenderError": (7, "see the reason above"),
    "plugserve.server.ServerError": (8, "see the server log named above, if any"),
    "plugserve.native.GpuUnavailable": (9, "run it on a machine with an NVIDIA GPU, or drop the option that needs one"),
}


def _epilog() -> str:
    codes: dict[int, list[str]] = {}
    for name, (code, _) in FAILURES.items():
        codes.setdefault(code, []).append(name.rpartition(".")[2])
    lines = ["exit codes:", "  0  success", "  1  a check failed (infer --check)", "  2  wrong arguments (UsageError and argparse's)"]
    meaning = {3: "bad models.yaml or option", 4: "a file is missing", 5: "a runtime is not installed here",
               6: "no server at the address", 7: "the server refused the request (wrong model name, bad input, "
                                                  "a load under model control none or poll, a version that fails to load)",
               8: "tritonserver could not be found or started (port in use, ...)",
               9: "no GPU here for what needs one (bench --shared-memory cuda, a tensorrt build)"}
    lines += [f"  {code}  {meaning[code]} ({', '.join(names)})" for code, names in sorted(codes.items()) if code > 2]
    lines.append("  -v prints the traceback of any failure")
    return "\n".join(lines)


def failure(error: BaseException) -> tuple[int, str] | None:
    """The exit code and the fix for an expected failure; None for a bug."""
    for cls in type(error).__mro__:
        found = FAILURES.get(f"{cls.__module__}.{cls.__qualname__}")
        if found is not None:
            return found
    return None


def _message(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError) and error.filename is not None:
        # OSError's own text ("[Errno 2] No such file or directory: 'x'") says the same less plainly;
        # plugserve's own FileNotFoundErrors carry a sentence saying which file it is.
        plain = error.strerror in (None, os.strerror(errno.ENOENT))
        return f"no such file: {error.filename}" if plain else f"{error.strerror}: {error.filename}"
    return str(error)


def versions() -> str:
    """`plugserve --version`: the package and what it runs on, each line found or why not."""
    lines = [f"plugserve {__version__}"]
    try:
        lines.append(f"libplugserve.so {native.version()} at {native.library_path()} ({native.build_info()})")
    except OSError as error:
        lines.append(f"libplugserve.so: not loadable ({error})")
    from importlib import metadata

    for package in ("torch", "onnxruntime", "tritonclient", "tensorrt"):
        try:
            lines.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{package}: not installed")
    try:
        lines.append(_tritonserver_version(server.find_tritonserver()))
    except server.ServerError as error:
        lines.append(f"tritonserver: {error}")
    return "\n".join(lines)


def _tritonserver_version(binary: Path) -> str:
    """tritonserver has no --version (its --help names none): NGC images write TRITON_VERSION beside
    bin/, and the nvidia-pytriton wheel's version says which server it bundles."""
    from importlib import metadata

    version_file = binary.parent.parent / "TRITON_VERSION"
    if version_file.is_file():
        return f"tritonserver {version_file.read_text().strip()} at {binary}"
    if "pytriton" in binary.parts:
        return f"tritonserver from nvidia-pytriton {metadata.version('nvidia-pytriton')} at {binary}"
    return f"tritonserver at {binary} (version unknown: it prints none)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="plugserve", description=__doc__.splitlines()[0], epilog=_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks on failure")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines, errors only")
    parser.add_argument("--version", action="store_true", help="print plugserve's and its dependencies' versions")
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    for name, (_, summary) in COMMANDS.items():
        subparsers.add_parser(name, help=summary, add_help=False)
    # The global flags come before the command; everything from the command on is the command's.
    split = next((i for i, arg in enumerate(argv) if arg in COMMANDS), len(argv))
    known = parser.parse_args(argv[:split + 1])
    if known.version:
        print(versions())
        return 0
    if known.command is None:
        parser.error("a command is required")
    console.quiet = known.quiet
    # Libraries' INFO records (onnx_ir's passes, ...) are for their developers: -v shows them.
    logging.basicConfig(level=logging.DEBUG if known.verbose else logging.ERROR if known.quiet else logging.WARNING,
                        format="%(name)s: %(message)s")

    module_name, summary = COMMANDS[known.command]
    command_parser = argparse.ArgumentParser(prog=f"plugserve {known.command}", description=summary)
    function = known.command.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
        getattr(module, f"add_{function}_arguments")(command_parser)
        args = command_parser.parse_args(argv[split + 1:])
        return int(getattr(module, f"run_{function}")(args) or 0)
    except Exception as error:
        found = failure(error)
        if found is None or known.verbose:
            raise
        code, fix = found
        fix = getattr(error, "fix", None) or fix  # an error that knows its own remedy says it
        print(f"plugserve {known.command}: {_message(error)}", file=sys.stderr)
        print(f"  -> {fix} (exit {code}; -v for the traceback)", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
