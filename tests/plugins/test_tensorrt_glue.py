"""The TensorRT glue compiles cleanly against each TensorRT header set and behaves as TensorRT expects.

No TensorRT runtime is needed: plugins/check_glue.sh compiles the glue with -Wall -Wextra -Werror
against the headers under .tensorrt/<version>/include (extracted from NVIDIA/TensorRT, never
committed), checks the symbols a linked library would export, and runs
tests/plugins/trt_glue_check.cpp, which drives the creators and plugins the way TensorRT does
(the harness tests, test_check_plugins.py, drive them from ONNX nodes).
"""

import pytest

pytestmark = [pytest.mark.slow]


def test_glue_compiles_without_warnings_exports_only_the_entry_points_and_passes_its_behaviour_check(
    include_dir, glue_check
):
    proc = glue_check(include_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exports: getCreators setLoggerFinder" in proc.stdout
    assert "behaviour check: OK: 0 failed checks" in proc.stdout
