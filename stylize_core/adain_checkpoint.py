"""AdaIN weights: pytorch-AdaIN's two files, our one-file format, and export back to theirs.

Accepted, each loaded with ``torch.load(..., weights_only=True)`` and strictly:

* pytorch-AdaIN's ``vgg_normalised.pth`` (a bare state dict of its 53-module ``vgg``; the layers
  after relu4_1 are kept for export only) or the same truncated to ``vgg[:31]``, as the encoder;
* its ``decoder.pth`` (a bare state dict of its ``decoder``), as the decoder;
* our one file ``{"format": "stylize-adain", "version": 1, "encoder": ..., "decoder": ...,
  "metadata": {...}}`` holding both (:func:`adain_checkpoint_bytes`). Its ``encoder`` may instead be
  a recipe, ``"random:SEED"``: the seeded random-filter encoder (:func:`stylize_core.adain.random_encoder`)
  is built on load, so the file holds the decoder alone (the shipped demo). An optional
  ``"architecture": {"width": W}`` scales both layouts' channel counts (absent: 1.0, their layout).

A file that is none of these is a :class:`~stylize_core.file_errors.FileUnusable` whose one line names
the file and what to stage where. Model id: :func:`stylize_core.adain_identity.adain_model_id`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import adain
from .adain_identity import adain_model_id
from .file_errors import FileUnusable, sniff_checkpoint, unusable

FORMAT = "stylize-adain"
VERSION = 1
ENCODER_HINT = "pass pytorch-AdaIN's models/vgg_normalised.pth as --encoder"
DECODER_HINT = ("pass pytorch-AdaIN's models/decoder.pth (or a decoder exported by this project) as --decoder, or "
                "a one-file AdaIN checkpoint of this project as --decoder without --encoder")
Opener = Callable[[str], bytes]


@dataclass
class AdaINWeights:
    """A loaded encoder (``vgg[:31]``) and decoder, and how metrics rows name them."""

    encoder: nn.Sequential
    decoder: nn.Sequential
    model_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # vgg_normalised.pth's layers after relu4_1 (state dict keys of the 53-module layout), kept for export
    encoder_tail: dict[str, torch.Tensor] = field(default_factory=dict)


def _staged(problem: FileUnusable, hint: str) -> FileUnusable:
    """``problem`` with what to stage where added to its hint."""
    return FileUnusable(problem.what, problem.uri, problem.cause, problem.reason, f"{problem.hint}; {hint}")


def _read(what: str, uri: str, opener: Opener, hint: str) -> bytes:
    try:
        return opener(uri)
    except Exception as exc:  # OSErrors, and what remote filesystems raise (an HTTP 403 is no OSError)
        raise _staged(unusable(what, uri, exc), hint) from None


def _load(what: str, uri: str, data: bytes, hint: str) -> Any:
    if problem := sniff_checkpoint(data):
        raise _staged(FileUnusable(what, uri, *problem), hint)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle weights_only refuses, a damaged archive, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise FileUnusable(what, uri, "not a checkpoint", f"torch.load(weights_only=True) cannot read it ({first})",
                           hint) from None


def _load_strict(module: nn.Module, state: Any, what: str, uri: str, hint: str) -> None:
    """``state`` into ``module`` strictly, or FileUnusable naming the first mismatch."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FileUnusable(what, uri, "wrong network", "it is not a bare state dict of tensors", hint)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or extra or wrong:
        if wrong:
            k = wrong[0]
            reason = f"{k} has shape {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
        else:
            reason = f"its keys do not match (missing {missing[:3]}, unexpected {extra[:3]})"
        raise FileUnusable(what, uri, "wrong network", f"it is not pytorch-AdaIN's {what} layout: {reason}", hint)
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def _index(key: str) -> int:
    head = key.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def encoder_from_state(state: Any, uri: str = "<state dict>", width: float = 1.0
                       ) -> tuple[nn.Sequential, dict[str, torch.Tensor]]:
    """The encoder ``vgg[:31]`` from a 53- or 31-module state dict, and the full file's tail (else {})."""
    if width != 1.0:  # only our one file has other widths, and it never holds the 53-module layout
        enc = adain.encoder(width)
        _load_strict(enc, state, "AdaIN encoder", uri, ENCODER_HINT)
        return enc, {}
    enc = adain.encoder()
    tail: dict[str, torch.Tensor] = {}
    if isinstance(state, Mapping) and any(_index(k) >= adain.ENCODER_MODULES for k in state):
        _load_strict(adain.full_encoder(), state, "AdaIN encoder", uri, ENCODER_HINT)  # the whole layout, strictly
        tail = {k: v for k, v in state.items() if _index(k) >= adain.ENCODER_MODULES}
        state = {k: v for k, v in state.items() if _index(k) < adain.ENCODER_MODULES}
    _load_strict(enc, state, "AdaIN encoder", uri, ENCODER_HINT)
    return enc, tail


def decoder_from_state(state: Any, uri: str = "<state dict>", width: float = 1.0) -> nn.Sequential:
    dec = adain.decoder(width)
    _load_strict(dec, state, "AdaIN decoder", uri, DECODER_HINT)
    return dec


def _one_file(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def load_adain(encoder_uri: str | None, decoder_uri: str, opener: Opener) -> AdaINWeights:
    """The weights named by ``--encoder``/``--decoder``: pytorch-AdaIN's two files, or our one file as
    ``decoder_uri`` with no ``encoder_uri``. Raises FileUnusable (one line) when they cannot be used."""
    dec_bytes = _read("AdaIN decoder", decoder_uri, opener, DECODER_HINT)
    dec_obj = _load("AdaIN decoder", decoder_uri, dec_bytes, DECODER_HINT)
    if _one_file(dec_obj):
        if encoder_uri:
            raise FileUnusable("AdaIN decoder", decoder_uri, "wrong network", "it is a one-file AdaIN checkpoint "
                               "that holds its own encoder", "drop --encoder, or pass a bare decoder state dict")
        return _from_one_file(dec_obj, decoder_uri, adain_model_id(dec_bytes))
    if not encoder_uri:
        raise FileUnusable("AdaIN decoder", decoder_uri, "wrong network", "it is a bare decoder and no --encoder "
                           "was given", ENCODER_HINT)
    enc_bytes = _read("AdaIN encoder", encoder_uri, opener, ENCODER_HINT)
    enc_obj = _load("AdaIN encoder", encoder_uri, enc_bytes, ENCODER_HINT)
    if _one_file(enc_obj):
        raise FileUnusable("AdaIN encoder", encoder_uri, "wrong network", "it is a one-file AdaIN checkpoint",
                           "pass it as --decoder without --encoder")
    enc, tail = encoder_from_state(enc_obj, encoder_uri)
    dec = decoder_from_state(dec_obj, decoder_uri)
    return AdaINWeights(enc, dec, adain_model_id(dec_bytes, enc_bytes), encoder_tail=tail)


def _from_one_file(obj: Mapping[str, Any], uri: str, digest: str) -> AdaINWeights:
    if obj.get("version") != VERSION:
        raise FileUnusable("AdaIN decoder", uri, "wrong network", f"it is a one-file AdaIN checkpoint of version "
                           f"{obj.get('version')!r}; this build reads version {VERSION}",
                           "export it again with this project's version")
    arch = obj.get("architecture") if isinstance(obj.get("architecture"), Mapping) else {}
    width = arch.get("width", 1.0)
    if not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise FileUnusable("AdaIN decoder", uri, "wrong network", f"its architecture width {width!r} is not in (0, 1]",
                           "export it again with this project's version")
    recipe = obj.get("encoder")
    if isinstance(recipe, str):
        seed = recipe.removeprefix("random:")
        if not recipe.startswith("random:") or not seed.isdigit():
            raise FileUnusable("AdaIN decoder", uri, "wrong network", f"its encoder recipe {recipe!r} is not "
                               "random:SEED", "export it again with this project's version")
        enc, tail = adain.random_encoder(int(seed), float(width)), {}
    else:
        enc, tail = encoder_from_state(recipe, uri, float(width))
    dec = decoder_from_state(obj.get("decoder"), uri, float(width))
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    if isinstance(recipe, str):
        metadata = {**metadata, "encoder": recipe, "width": float(width)}
    return AdaINWeights(enc, dec, digest, dict(metadata), tail)


def adain_checkpoint_bytes(enc: nn.Module | None, dec: nn.Module, metadata: Mapping[str, Any] | None = None, *,
                           encoder_recipe: str | None = None, width: float = 1.0) -> bytes:
    """Our one file: encoder (``vgg[:31]``) and decoder state dicts plus metadata (str/int/float values).
    ``encoder_recipe`` (``"random:SEED"``) replaces the encoder's weights (``enc`` is then None);
    ``width`` is recorded when the layouts are not pytorch-AdaIN's own (1.0)."""
    if (enc is None) == (encoder_recipe is None):
        raise ValueError("pass an encoder or an encoder_recipe, not both or neither")
    obj: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                           "encoder": encoder_recipe if enc is None else _plain(enc.state_dict()),
                           "decoder": _plain(dec.state_dict()), "metadata": dict(metadata or {})}
    if width != 1.0:
        obj["architecture"] = {"width": float(width)}
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def export_decoder(dec: nn.Module) -> dict[str, torch.Tensor]:
    """The decoder as pytorch-AdaIN's ``decoder.pth`` holds it (``decoder.load_state_dict`` strictly)."""
    return _plain(dec.state_dict())


def export_encoder(enc: nn.Module, tail: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The encoder as ``vgg_normalised.pth`` holds it: all 53 modules, so their ``vgg.load_state_dict``
    loads it strictly. Layers after relu4_1 come from ``tail`` (kept when the encoder was loaded from a
    full file); without it they are zeros, which their ``test.py`` never runs (it keeps ``vgg[:31]``)."""
    full = adain.full_encoder().state_dict()
    out = {k: torch.zeros_like(v) for k, v in full.items() if _index(k) >= adain.ENCODER_MODULES}
    out.update(_plain(tail or {}))
    out.update(_plain(enc.state_dict()))
    return {k: out[k] for k in full}
