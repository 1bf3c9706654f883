"""The NumPy/CuPy switch: one array namespace and FFT module for a code path.

Code that should run on either device asks :func:`get_xp` for ``(xp, fft)``
and writes ``xp.abs(...)``, ``fft.rfft2(...)``; nothing else imports CuPy.
``backend="auto"`` picks CuPy when it imports and sees a GPU, NumPy otherwise.
On the CPU, FFTs are ``scipy.fft`` with ``workers`` threads.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy as np
import scipy.fft

__all__ = ["get_xp", "gpu_available", "to_numpy", "Backend"]

Backend = str  # "numpy", "cupy" or "auto"


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if os.environ.get("PLATE_REFOCUS_NO_GPU"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


class _ScipyFFT:
    """``scipy.fft`` with a fixed number of worker threads."""

    def __init__(self, workers: int | None):
        self.workers = workers

    def __getattr__(self, name: str) -> Any:
        func = getattr(scipy.fft, name)
        if name in {"fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2", "rfftn", "irfftn"}:
            return functools.partial(func, workers=self.workers)
        return func


def get_xp(backend: Backend = "auto", *, workers: int | None = None) -> tuple[ModuleType, Any]:
    """Return ``(xp, fft)`` for ``backend`` in ``{"auto", "numpy", "cupy"}``.

    Parameters
    ----------
    backend : str
        ``"cupy"`` raises ``RuntimeError`` when no GPU is usable, so a job
        that asked for the GPU never silently runs on the CPU.
    workers : int, optional
        Threads for ``scipy.fft`` on the CPU (``-1``: all cores).
    """
    if backend not in {"auto", "numpy", "cupy"}:
        raise ValueError(f"backend must be 'auto', 'numpy' or 'cupy', got {backend!r}")
    if backend == "cupy" or (backend == "auto" and gpu_available()):
        if not gpu_available():
            raise RuntimeError(
                "backend='cupy' needs CuPy and a CUDA GPU; install 'plate-refocus[gpu]' "
                "on a GPU node, or pass backend='numpy'"
            )
        import cupy
        import cupyx.scipy.fft as cufft

        return cupy, cufft
    return np, _ScipyFFT(workers)


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array (no-op for NumPy)."""
    if hasattr(array, "get") and type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array)
