"""config.pbtxt's `model_operations` for Triton's own onnxruntime backend (the NGC image).

That backend hands each `op_library_filename` to ONNX Runtime's `RegisterCustomOpsLibrary` as
it is, which `dlopen`s it: a relative path would resolve against tritonserver's working directory,
not the model's, so the field names an absolute path, that of a library that exists when the
config is written (the copy in the version directory, or the documented install path
`/opt/plugserve/lib/libplugserve_ort.so` of an image that bakes it in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_operations(library: str | Path) -> dict[str, Any]:
    """`{"model_operations": {"op_library_filename": [library]}}`, in `model_config_pb2.ModelConfig`
    field names, to merge into a config dict; `library` must be an absolute path to a file."""
    path = Path(library)
    if not path.is_absolute():
        raise ValueError(f"model_operations: the op library must be an absolute path (Triton dlopens it as given), "
                         f"got {library}")
    if not path.is_file():
        raise FileNotFoundError(f"model_operations: op library {path} does not exist")
    return {"model_operations": {"op_library_filename": [str(path)]}}
