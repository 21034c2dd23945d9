"""cuda-python runtime helpers of the TensorRT backend: error checks, the stream's native handle, and device
buffers with pinned host twins. Every function takes the runtime module it uses (the backend's, which tests
replace with a stand-in); nothing here imports cuda-python at module level."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from cyclegan_deploy.errors import BackendUnavailableError


def cuda_runtime() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        raise BackendUnavailableError(f"cuda-python is not installed ({e}); pip install cuda-python") from e
    return cudart


def check(result: Any, what: str, cudart: Any = None) -> Any:
    """cuda-python returns (error, *values): raise on error (its text from `cudart`, the runtime that made the
    call), unwrap the value."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        _, text = (cudart or cuda_runtime()).cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else text
        raise BackendUnavailableError(f"CUDA {what} failed: {err} ({text})")
    return values[0] if len(values) == 1 else tuple(values)


def native_handle(obj: Any) -> int:
    """The address a cuda-python handle (a cudaStream_t) wraps, as the int TensorRT's `stream_handle` takes.
    cuda-bindings 12.9.1 and 13.x deprecate int(obj) for get_cuda_native_handle; older 12.x only have int()."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))


class Buffer:
    """A device buffer and its pinned host twin, regrown (never shrunk) when a bigger shape arrives. Holds the
    runtime module it allocated with, so freeing needs no import (it may run from __del__ at exit)."""

    def __init__(self, cudart: Any) -> None:
        self.cudart = cudart
        self.nbytes, self.device, self.host = 0, 0, 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        # cudaMalloc returns a plain int address in cuda.bindings.runtime (no handle object to unwrap)
        self.device = int(check(self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})", self.cudart))
        self.host = int(check(self.cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})", self.cudart))
        self.nbytes = nbytes

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        count = int(np.prod(shape)) * dtype.itemsize
        raw = (ctypes.c_byte * count).from_address(self.host)  # a view on the pinned memory, no copy
        return np.frombuffer(memoryview(raw).cast("B"), dtype=dtype).reshape(shape)

    def free(self) -> None:
        device, host, self.nbytes, self.device, self.host = self.device, self.host, 0, 0, 0  # never freed twice
        if device:
            self.cudart.cudaFree(device)
        if host:
            self.cudart.cudaFreeHost(host)
