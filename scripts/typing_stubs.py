"""Write a usable copy of the tensorrt-stubs type stubs into DIR, for `MYPYPATH=DIR mypy`.

tensorrt-stubs (10.13.0.35.1, the only release) installs `tensorrt/` and `tensorrt_bindings/`
without a py.typed marker, so mypy skips them and, with ignore_missing_imports, silently types
every TensorRT call as Any. Its generated `tensorrt.pyi` also has a few lines that are not valid
Python (parameters named `in`), shadows `bool`, and leaves some types as `...`. This copies the
stubs with those lines repaired; a directory on MYPYPATH needs no marker. Errors mypy still finds
inside the stubs are silenced by the `tensorrt*` override in pyproject.toml, not in our code.

Usage: python scripts/typing_stubs.py DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# (pattern, replacement), applied in order; each repairs one kind of generated line.
REPAIRS = [
    # Parameters named after a keyword.
    (re.compile(r"([(,] ?)in: "), r"\1in_: "),
    # A parameter without default after defaulted ones (the binding gives it none either).
    (re.compile(r"(power: Weights = None, channel_axis: int)\)"), r"\1 = ...)"),
    # The module defines `bool: DataType`, shadowing the builtin in every annotation.
    (re.compile(r"(?<![.\w])bool\b(?!: DataType)"), "builtins.bool"),
    (
        re.compile(r"^from __future__ import annotations$", re.M),
        "from __future__ import annotations\nimport builtins\nimport typing_extensions",
    ),
    # Return types the generator could not name, where the binding's documentation names them.
    (re.compile(r"def get_plugin_registry\(\) -> \.\.\.:"), "def get_plugin_registry() -> IPluginRegistry:"),
    (
        re.compile(r"def get_error\(self, index: int\) -> \.\.\.:"),
        "def get_error(self, index: int) -> ParserError:",
    ),
    # Anything else it could not name (`...`, pybind11 capsules) is Any.
    (re.compile(r"(: |-> )\.\.\.(?=[,):])"), r"\1typing.Any"),
    (re.compile(r"\bcapsule\b(?=[,):])"), "typing.Any"),
]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        import tensorrt_stubs
    except ImportError:
        print(
            "tensorrt-stubs is not installed: pip install --no-deps 'tensorrt-stubs>=10.13'", file=sys.stderr
        )
        return 1
    site = Path(tensorrt_stubs.__file__).resolve().parents[1]
    target = Path(argv[0])
    for package in ("tensorrt", "tensorrt_bindings"):
        for stub in sorted((site / package).glob("*.pyi")):
            text = stub.read_text()
            for pattern, replacement in REPAIRS:
                text = pattern.sub(replacement, text)
            out = target / package / stub.name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
