"""The style predictor's one-file checkpoint (:mod:`stylize_core.predictor`).

A plain dict, saved with ``torch.save`` and loaded with ``torch.load(..., weights_only=True)``::

    {"format": "stylize.style_predictor", "version": 1,
     "config": {"net": NetConfig dict, "embedding": E, "channels": [...], "style_size": px},
     "transformer": the TransformerNet's state dict (its norm gamma/beta: the untuned defaults),
     "predictor": the StylePredictor's state dict,
     "content_embedding": (E,) tensor, the mean embedding of the training content images,
     "metadata": {"training": JSON of the recipe, ...} (str/int/float values)}

Tensors may be stored in fp16 (the demo is); they are loaded as fp32. A file that is none of this
is a :class:`~stylize_core.file_errors.FileUnusable` whose one line names the file and what to do.
Model id: :func:`stylize_core.predictor_identity.predictor_model_id` (sha256 of the bytes).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .file_errors import FileUnusable, sniff_checkpoint, unusable
from .predictor import PredictorConfig, StylePredictorModel
from .predictor_identity import predictor_model_id

FORMAT = "stylize.style_predictor"
VERSION = 1
WHAT = "style predictor"
HINT = ("pass a style-predictor checkpoint saved by this project (python -m jobs.train --task predict, or "
        "python -m stylize_core.predictor_demo), or leave --predictor out for the shipped demo model")
Opener = Callable[[str], bytes]


@dataclass
class PredictorWeights:
    """A loaded predictor model and how metrics rows name it."""

    model: StylePredictorModel
    model_id: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _wrong(uri: str, reason: str) -> FileUnusable:
    return FileUnusable(WHAT, uri, "wrong network", reason, HINT)


def _load_state(module: torch.nn.Module, state: Any, uri: str, part: str) -> None:
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _wrong(uri, f"its {part!r} is not a state dict of tensors")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        raise _wrong(uri, f"its {part} keys do not match its config (missing {missing[:3]}, unexpected {extra[:3]})")
    wrong = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise _wrong(uri, f"its {part} {k} has shape {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}")
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def predictor_from_bytes(data: bytes, uri: str = "<bytes>") -> PredictorWeights:
    """The model in checkpoint bytes ``data``; FileUnusable (one line) when they are not one."""
    if problem := sniff_checkpoint(data):
        raise FileUnusable(WHAT, uri, *problem, HINT)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle weights_only refuses, a damaged archive, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise FileUnusable(WHAT, uri, "not a checkpoint", f"torch.load(weights_only=True) cannot read it ({first})",
                           HINT) from None
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        found = obj.get("format") if isinstance(obj, Mapping) else None
        kind = f"a {found!r} checkpoint" if found else "not a style-predictor checkpoint"
        raise _wrong(uri, f"it is {kind}")
    if obj.get("version") != VERSION:
        raise _wrong(uri, f"it is a style-predictor checkpoint of version {obj.get('version')!r}; this build "
                          f"reads version {VERSION}")
    try:
        config = PredictorConfig.from_dict(dict(obj.get("config") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise _wrong(uri, f"its config is unusable ({exc})") from None
    model = StylePredictorModel(config)
    _load_state(model.transformer, obj.get("transformer"), uri, "transformer")
    _load_state(model.predictor, obj.get("predictor"), uri, "predictor")
    content = obj.get("content_embedding")
    if not isinstance(content, torch.Tensor) or tuple(content.shape) != (config.embedding,):
        raise _wrong(uri, f"its content_embedding is not a ({config.embedding},) tensor")
    model.content_embedding.copy_(content.float())
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return PredictorWeights(model.eval().requires_grad_(False), predictor_model_id(data), dict(metadata))


def load_predictor(uri: str, opener: Opener) -> PredictorWeights:
    """The checkpoint at ``uri`` read through ``opener``; FileUnusable (one line) when it cannot be used."""
    try:
        data = opener(uri)
    except Exception as exc:  # OSErrors, and what remote filesystems raise (an HTTP 403 is no OSError)
        problem = unusable(WHAT, uri, exc)
        raise FileUnusable(WHAT, uri, problem.cause, problem.reason, f"{problem.hint}; {HINT}") from None
    return predictor_from_bytes(data, uri)


def predictor_checkpoint_bytes(model: StylePredictorModel, metadata: Mapping[str, Any] | None = None, *,
                               half: bool = False) -> bytes:
    """The one file for ``model``; ``half`` stores its tensors in fp16 (about half the size)."""
    def plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (v.detach().cpu().half() if half else v.detach().cpu().float()).clone() for k, v in state.items()}

    obj = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
           "transformer": plain(model.transformer.state_dict()), "predictor": plain(model.predictor.state_dict()),
           "content_embedding": model.content_embedding.detach().cpu().float().clone(),
           "metadata": dict(metadata or {})}
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
