"""config.pbtxt's model_operations field for Triton's onnxruntime backend: schema-checked, names a real library."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugserve import plugins
from plugserve.model_operations import model_operations

model_config_pb2 = pytest.importorskip("tritonclient.grpc").model_config_pb2


def test_model_operations_round_trips_through_model_config_and_names_the_built_library(tmp_path):
    from google.protobuf import json_format, text_format

    library = plugins.onnxruntime_library()
    if library is None:
        pytest.skip("libplugserve_ort.so not built")
    # As a repository build would have it: the library copied into the version directory.
    copy = tmp_path / "1" / library.name
    copy.parent.mkdir()
    copy.write_bytes(library.read_bytes())
    config = {"name": "encoder", "backend": "onnxruntime", **model_operations(copy.resolve())}
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    parsed = text_format.Parse(text_format.MessageToString(message), model_config_pb2.ModelConfig())
    [named] = parsed.model_operations.op_library_filename
    assert Path(named) == copy.resolve() and Path(named).is_file()


def test_a_relative_or_missing_library_is_refused(tmp_path):
    with pytest.raises(ValueError, match="absolute path"):
        model_operations("libplugserve_ort.so")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model_operations(tmp_path / "libplugserve_ort.so")
