"""Which errors poison the CUDA context (exit the process) and which do not (an error row)."""

from __future__ import annotations

import pytest
import torch

from stylize_core.device_errors import is_fatal_device_error

TAIL = ("\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
        "below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1")


@pytest.mark.parametrize("message", [
    "CUDA error: an illegal memory access was encountered" + TAIL,
    "CUDA error: uncorrectable ECC error encountered" + TAIL,
    "CUDA error: device-side assert triggered" + TAIL,
    "CUDA error: unspecified launch failure" + TAIL,
    "CUDA error: misaligned address" + TAIL,
    "CUDA error: an illegal instruction was encountered",
    "CUDA error: unknown error",
    "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, m, n, k, ...)`",
    "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED",
])
def test_sticky_messages_are_fatal(message):
    assert is_fatal_device_error(RuntimeError(message))


@pytest.mark.parametrize("exc", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)"),
    RuntimeError("CUDA error: out of memory" + TAIL),
    RuntimeError("CUDA error: invalid configuration argument"),
    RuntimeError("Given groups=1, weight of size [32, 3, 9, 9], expected input[1, 4, 64, 64] to have 3 channels"),
    ValueError("expected a non-empty (H, W, 3) uint8 image"),
])
def test_other_errors_are_not_fatal(exc):
    assert not is_fatal_device_error(exc)


def test_accelerator_error_by_code_and_chained_causes():
    accel = getattr(torch, "AcceleratorError", RuntimeError)
    err = accel("CUDA error: something new")
    err.error_code = 700  # cudaErrorIllegalAddress, as torch sets it
    assert is_fatal_device_error(err)
    other = accel("CUDA error: invalid argument")
    other.error_code = 1
    assert not is_fatal_device_error(other)
    try:
        try:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        except RuntimeError as inner:
            raise ValueError("stylize failed") from inner
    except ValueError as outer:
        assert is_fatal_device_error(outer)
