"""plugserve: PyTorch operators as TensorRT plugins, served from a versioned Triton model repository."""

__version__ = "0.1.0"
