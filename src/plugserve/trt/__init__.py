"""The TensorRT toolkit: everything that calls TensorRT, and nothing that knows models.yaml.

- environment.py  the TensorRT installation, GPU detection, the process's TensorRT logger
- registry.py     plugin creators: loading libplugserve.so, checking a graph's plugin nodes
- engine.py       ONNX -> engine: profiles, precision plan, timing cache, the build
- graph.py        an exported plugin-node graph prepared for the parser and for Triton
- provenance.py   what an engine was built with, and whether it can run here

TensorRT is imported inside functions only, after `environment.require_tensorrt()`, so these
modules import (and their pure parts run) where TensorRT is absent. The "tensorrt" lowering
(plugserve.lowering.tensorrt) composes them for one model of models.yaml.
"""
