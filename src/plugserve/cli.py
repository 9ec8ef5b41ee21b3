"""`plugserve <command>`: each command lives in the module that does the work.

Modules are imported only for the command that runs, so `plugserve --help` and
`plugserve <command> --help` work without torch or TensorRT installed. A command module
defines `add_<command>_arguments(parser)` and `run_<command>(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("plugserve.export", "export a model from its checkpoint to ONNX"),
    "pluginize": ("plugserve.surgery", "rewrite Resize and legacy plugin nodes into plugserve plugin nodes"),
    "decompose": ("plugserve.surgery", "rewrite plugserve plugin nodes into standard ONNX ops"),
    "build": ("plugserve.build", "build model_repository/<model>/<version>/ from models.yaml"),
    "serve": ("plugserve.serve", "run tritonserver on a model repository"),
    "infer": ("plugserve.client", "send a request to a served model and optionally check it"),
    "demo": ("plugserve.demo", "export, build, serve and verify both headline models"),
    "bench": ("plugserve.perf.cli", "perf sweeps over concurrency or request rate"),
    "report": ("plugserve.report", "write a Markdown report with plots from bench/results/"),
    "check-plugins": ("plugserve.check_plugins", "each plugin node through TensorRT's parser, builder and runtime"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="plugserve", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, (_, summary) in COMMANDS.items():
        subparsers.add_parser(name, help=summary, add_help=False)
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)

    module_name, summary = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    command_parser = argparse.ArgumentParser(prog=f"plugserve {known.command}", description=summary)
    function = known.command.replace("-", "_")
    getattr(module, f"add_{function}_arguments")(command_parser)
    args = command_parser.parse_args(argv[1:])
    return int(getattr(module, f"run_{function}")(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
