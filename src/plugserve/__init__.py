"""plugserve: PyTorch operators as TensorRT plugins, served from a versioned Triton model repository.

The package in layers, top to bottom; a module imports only from its own layer or the ones below
(tests/unit/test_layout.py checks this, and that no modules import each other in a circle):

    cli                                   `plugserve <command>`, each command in the module that does the work
    demo  report  perf/                   the end-to-end demo, the bench report, the perf harness
    serve  server  watchdog  client       `plugserve serve`; tritonserver's process and model loading;
                                          dead instances reloaded; tritonclient wrappers
    build  check_plugins                  one model or all of models.yaml into the repository; plugin nodes
                                          through TensorRT's parser, builder and runtime (plugins/harness)
    lowering/                             one module per runtime, the same face each (onnxruntime, tensorrt, torch)
    trt/  export  surgery  onnx_io        the TensorRT toolkit; PyTorch -> ONNX; plugin-node graph rewrites;
                                          an ONNX's inputs/outputs against models.yaml (`plugserve init`)
      runners/torch_program  torch_runner   the torch runtime's serve side (needs the ops)
    repository  repository_api            the on-disk layout; a running server's repository API (load,
                                          what it holds)
    ops/  models/                         the operators; the headline models
    config  native  runners/  console     models.yaml; the ctypes loader of libplugserve.so; code that
                                          runs inside tritonserver (contract.py: stdlib + numpy only);
                                          progress lines and UsageError

torch, onnx, onnxruntime and tensorrt are imported inside the functions that need them, so that
`plugserve --help` and every module's import work without them.
"""

__version__ = "0.1.0"
