"""Which exceptions leave the CUDA context unusable, so the process must exit to recover.

After a "sticky" CUDA error (an illegal memory access, an uncorrectable ECC error, a device-side
assert, ...) every later CUDA call in the process fails with the same error: catching it per row
would turn every later row into an error. The CUDA runtime documents these errors as leaving "the
process in an inconsistent state": the only recovery is a new process. Out-of-memory is *not*
sticky: the caching allocator frees and the next (smaller) batch can succeed.
"""

from __future__ import annotations

import torch

# cudaError_t values the CUDA runtime documents as corrupting the context (torch.AcceleratorError
# carries one as ``error_code``, torch >= 2.8).
STICKY_CUDA_ERROR_CODES = frozenset({
    214,  # cudaErrorECCUncorrectable
    220,  # cudaErrorNvlinkUncorrectable
    700,  # cudaErrorIllegalAddress
    702,  # cudaErrorLaunchTimeout
    709,  # cudaErrorContextIsDestroyed
    710,  # cudaErrorAssert
    714,  # cudaErrorHardwareStackError
    715,  # cudaErrorIllegalInstruction
    716,  # cudaErrorMisalignedAddress
    717,  # cudaErrorInvalidAddressSpace
    718,  # cudaErrorInvalidPc
    719,  # cudaErrorLaunchFailure
    999,  # cudaErrorUnknown
})

# The same errors as cudaGetErrorString words them (older torch raises a plain RuntimeError
# "CUDA error: <text>"), plus the library errors a poisoned context surfaces as.
STICKY_MESSAGES = (
    "illegal memory access",
    "uncorrectable ecc error",
    "uncorrectable nvlink error",
    "the launch timed out and was terminated",
    "context is destroyed",
    "device-side assert triggered",
    "hardware stack error",
    "illegal instruction",
    "misaligned address",
    "operation not supported on global/shared address space",
    "invalid program counter",
    "unspecified launch failure",
    "cuda error: unknown error",
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
    "cudnn_status_mapping_error",
)

_OOM_MESSAGES = ("out of memory",)


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_fatal_device_error(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) poisons the CUDA context.

    The caller should end the process (a Ray actor: exit so Ray replaces it and retries the batch)
    instead of turning the error into a row. Out-of-memory errors are never fatal.
    """
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t)
    for e in _chain(exc):
        text = str(e).lower()
        if isinstance(e, oom_types) or any(m in text for m in _OOM_MESSAGES):
            return False
        code = getattr(e, "error_code", None)
        if isinstance(code, int) and code in STICKY_CUDA_ERROR_CODES:
            return True
        if any(m in text for m in STICKY_MESSAGES):
            return True
    return False
