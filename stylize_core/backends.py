"""Where a style network runs: PyTorch eager, ``torch.compile``, onnxruntime or OpenVINO, behind one call.

:func:`make_backend` takes a loaded style network (any ``nn.Module`` mapping (B, 3, H, W) float32 RGB
in 0..255 to (B, 3, H, W); sides multiples of 4, which the :class:`~stylize_core.stylizer.Stylizer`
ensures by padding) and returns a :class:`Backend`: a callable with the same contract plus a ``name``
and a :meth:`~Backend.describe` string (backend, version, precision) for metrics rows.

- ``eager``: the module itself (a copy), channels_last on CPU, under ``torch.inference_mode``.
- ``compile``: ``torch.compile(dynamic=True)`` of that copy (inductor; needs a C compiler). One
  shape-generic graph serves every size and every batch of 2 or more (a batch of 1 is a second graph:
  torch specialises sizes of 1; measured 16 s for the first, 7 s for the second, tiny net, cold cache): a
  compile costs tens of seconds on a small CPU, and a static graph per shape would pay it again for
  every new image size.
- ``onnxruntime``: the module exported by :func:`stylize_core.onnx_export.onnx_bytes` (in memory; dynamic
  batch, height and width), one CPU-EP session with intra-op threads = ``threads``.
- ``openvino``: the same ONNX graph read by OpenVINO, compiled once with dynamic batch/height/width.
  A static model per input shape (``static_shapes=True``, the ``max_shapes`` most recent kept) measured
  no faster (benchmarks/bench_backends.py --ov-static; static/dynamic rate 0.98 fp32 and 0.82 bf16 at
  512 px, 0.96 and 1.02 at 256 px), and a dynamic model costs one compile instead of one per shape.

A spec ``NAME:bf16`` (e.g. ``openvino:bf16``) runs eager/compile under CPU bf16 autocast and sets
OpenVINO's inference precision hint to bf16: several times faster on CPUs with AMX or AVX512-BF16, and
0.15 of a grey level off on average (see README "CPU backends"). onnxruntime's CPU provider has no
bf16 kernels: refused.

The optional packages are imported when a backend is made, never on import of this module; a missing
one raises :class:`BackendUnavailable` naming the extra to install (``pip install 'stylize[cpu]'``).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

BACKENDS = ("eager", "compile", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
EXTRA = "cpu"  # pyproject extra that installs onnxruntime and openvino


class BackendError(ValueError):
    """A backend name or option this module does not know, or a combination it cannot run."""


class BackendUnavailable(BackendError, ImportError):
    """The backend's package is not installed (the message names the extra that installs it)."""


class Backend:
    """A style network on one runtime: ``backend(x)`` with x (B, 3, H, W) float32 0..255 -> (B, 3, H, W).

    Not re-entrant: one caller at a time (a lock serialises concurrent calls).
    """

    name: str = ""

    def __init__(self, precision: str, threads: int) -> None:
        self.precision = precision
        self.threads = threads
        self._lock = threading.Lock()

    def version(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        """``"<name> <version> <precision>"``, e.g. ``"openvino 2026.4.1 fp32"``; goes into metrics rows."""
        return f"{self.name} {self.version()} {self.precision}"

    def run(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        with self._lock:
            return self.run(x)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()} threads={self.threads}>"


def _prepared_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, gradient-free float32 CPU copy: the caller's module is never changed."""
    return copy.deepcopy(model).float().cpu().eval().requires_grad_(False)


class _TorchBackend(Backend):
    def __init__(self, model: nn.Module, precision: str, threads: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(precision, threads)
        self.model = model
        self._fn = fn

    def version(self) -> str:
        return torch.__version__

    def run(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, H, W) NHWC-strided: oneDNN's convolutions and the group-norm InstanceNorm are faster so
        x = x.to("cpu", torch.float32).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self._fn(x).float()


class EagerBackend(_TorchBackend):
    """The module as PyTorch runs it today (channels_last on CPU)."""

    name = "eager"

    def __init__(self, model: nn.Module, precision: str, threads: int) -> None:
        net = _prepared_copy(model).to(memory_format=torch.channels_last)
        super().__init__(net, precision, threads, net)


class CompileBackend(_TorchBackend):
    """``torch.compile`` (inductor, default mode, dynamic shapes) of the channels_last module; compiles on first call."""

    name = "compile"

    def __init__(self, model: nn.Module, precision: str, threads: int) -> None:
        net = _prepared_copy(model).to(memory_format=torch.channels_last)
        super().__init__(net, precision, threads, torch.compile(net, dynamic=True))


def _import(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend needs {package} ({exc}); install it with: pip install 'stylize[{EXTRA}]'"
        ) from None


def _numpy_input(x: torch.Tensor):
    # the runtimes read plain C-contiguous NCHW float32 buffers
    return x.detach().to("cpu", torch.float32).contiguous().numpy()  # (B, 3, H, W)


class OnnxRuntimeBackend(Backend):
    """One onnxruntime CPU-EP session over the in-memory ONNX export (dynamic batch, height, width)."""

    name = "onnxruntime"

    def __init__(self, model: nn.Module, precision: str, threads: int, onnx_model: bytes | None = None) -> None:
        if precision != "fp32":
            raise BackendError("onnxruntime's CPU execution provider runs fp32 only: use 'onnxruntime', or 'openvino:bf16'")
        super().__init__(precision, threads)
        ort = _import("onnxruntime", "onnxruntime")
        _import("onnx", "onnx (the ONNX exporter writes with it)")
        self._ort = ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # a chain of convolutions: nothing to run side by side
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        data = onnx_model if onnx_model is not None else export_onnx_bytes(model)
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def version(self) -> str:
        return self._ort.__version__

    def run(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self._input: _numpy_input(x)})[0]  # (B, 3, H, W)
        return torch.from_numpy(out)


class OpenVinoBackend(Backend):
    """OpenVINO's CPU plugin over the in-memory ONNX export: one dynamic-shape compiled model, or with
    ``static_shapes`` one per input shape (the ``max_shapes`` most recent)."""

    name = "openvino"

    def __init__(
        self, model: nn.Module, precision: str, threads: int, onnx_model: bytes | None = None, max_shapes: int = 8,
        static_shapes: bool = False,
    ) -> None:
        super().__init__(precision, threads)
        ov = _import("openvino", "openvino")
        _import("onnx", "onnx (the ONNX exporter writes with it)")
        self._ov = ov
        self.core = ov.Core()
        data = onnx_model if onnx_model is not None else export_onnx_bytes(model)
        self._model = self.core.read_model(data)  # ONNX bytes: OpenVINO's ONNX frontend reads them in memory
        # OpenVINO defaults to bf16 on CPUs that have it, so fp32 is asked for explicitly; bf16 only where
        # the plugin lists it (AVX512-BF16/AMX), else f32, which describe() then reports
        bf16 = precision == "bf16" and "BF16" in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        self._config = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all threads on it
        }
        self.max_shapes = max_shapes
        self.static_shapes = static_shapes
        self._requests: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self.compiled_precision = ""

    def version(self) -> str:
        return self._ov.get_version().split("-")[0]

    def _request(self, shape: tuple[int, ...]):
        key = shape if self.static_shapes else ()  # () : the one dynamic-shape model
        req = self._requests.get(key)
        if req is not None:
            self._requests.move_to_end(key)
            return req
        model = self._model.clone()
        if self.static_shapes:
            model.reshape({0: list(shape)})
        compiled = self.core.compile_model(model, "CPU", self._config)
        # record the precision the plugin actually runs, for describe()
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type
        self.compiled_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        req = compiled.create_infer_request()
        self._requests[key] = req
        if len(self._requests) > self.max_shapes:
            self._requests.popitem(last=False)
        return req

    def describe(self) -> str:
        actual = f" (plugin: {self.compiled_precision})" if self.compiled_precision else ""
        return super().describe() + actual

    def run(self, x: torch.Tensor) -> torch.Tensor:
        arr = _numpy_input(x)
        # outputs are copied out of the request (share_outputs=False): the next call reuses its buffers
        out = self._request(tuple(arr.shape)).infer({0: arr}, share_inputs=True, share_outputs=False)[0]
        return torch.from_numpy(out)


def export_onnx_bytes(model: nn.Module) -> bytes:
    """The module as ONNX bytes with dynamic batch/height/width (wraps :func:`stylize_core.onnx_export.onnx_bytes`)."""
    from .onnx_export import onnx_bytes

    return onnx_bytes(model)  # type: ignore[arg-type]  # any module with the TransformerNet contract


_CLASSES: dict[str, type[Backend]] = {
    "eager": EagerBackend,
    "compile": CompileBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVinoBackend,
}
# Every spec make_backend accepts: "NAME" (fp32) or "NAME:bf16"; for argparse choices and settings checks.
BACKEND_SPECS = tuple(BACKENDS) + tuple(f"{n}:bf16" for n in BACKENDS if n != "onnxruntime")
_PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}


def parse_spec(spec: str) -> tuple[str, str]:
    """``"openvino:bf16"`` -> ``("openvino", "bf16")``; ``"eager"`` -> ``("eager", "fp32")``.
    Raises :class:`BackendError` naming the choices for an unknown backend or precision."""
    name, _, precision = spec.strip().partition(":")
    precision = precision or "fp32"
    if name not in _CLASSES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} (optionally :bf16)")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r} in {spec!r}; choose one of {', '.join(PRECISIONS)}")
    return name, precision


def make_backend(model: nn.Module, spec: str = "eager", *, threads: int | None = None) -> Backend:
    """``model`` (an ``nn.Module``, (B, 3, H, W) 0..255 -> (B, 3, H, W)) running on backend ``spec``.

    ``spec`` is ``NAME`` or ``NAME:PRECISION`` (:data:`BACKEND_SPECS`; precision fp32 unless given).
    ``threads`` defaults to ``torch.get_num_threads()``. Raises :class:`BackendError` for an unknown
    name or precision and :class:`BackendUnavailable` when the backend's package is not installed.
    The module is copied, never changed. Every backend runs on CPU (GPUs keep the Stylizer's own
    path); ``threads`` sizes the onnxruntime/OpenVINO pools, while eager/compile use torch's
    process-wide setting, left as it is.
    """
    name, precision = parse_spec(spec)
    threads = threads or torch.get_num_threads()
    return _CLASSES[name](model, precision, threads)


def backend_available(spec: str) -> str | None:
    """None when ``spec`` can be made here, else why not (unknown name, or the missing package and its extra)."""
    try:
        name, _ = parse_spec(spec)
        for module in _PACKAGES.get(name, ()):
            _import(module, module)
    except BackendError as exc:
        return str(exc)
    return None
