"""Checkpoints: project format, bare pytorch/examples state dicts, legacy keys, unsafe pickles."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch

from stylize_core.checkpoint import (
    StyleModelError,
    checkpoint_bytes,
    examples_state_dict,
    load_style_model,
    save_style_model,
)
from stylize_core.transformer_net import TransformerNet


def _model(seed: int = 0) -> TransformerNet:
    torch.manual_seed(seed)
    return TransformerNet()


def _same(a: TransformerNet, b: TransformerNet, atol: float = 0.0) -> None:
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=atol)


def test_project_checkpoint_round_trip(tmp_path):
    model = _model()
    style = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = str(tmp_path / "m.pth")
    digest = save_style_model(model, path, style_image=style, style="mosaic", training_config={"lr": 1e-3, "layers": ["relu2_2"]})
    loaded = load_style_model(path)
    _same(model, loaded.model)
    assert loaded.metadata == {"style": "mosaic", "training_config": {"lr": 1e-3, "layers": ["relu2_2"]}}
    np.testing.assert_array_equal(loaded.style_image, style)
    assert loaded.sha256 == digest and len(digest) == 64
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_fp16_checkpoint_loads_as_float32():
    model = _model(1)
    loaded = load_style_model("mem", data=checkpoint_bytes(model, half=True))
    assert all(v.dtype == torch.float32 for v in loaded.model.state_dict().values())
    _same(model, loaded.model, atol=0.05)


def test_pytorch_examples_state_dict_round_trip(tmp_path):
    """What pytorch/examples saves (torch.save(model.state_dict())) loads, and what we export loads there."""
    model = _model(2)
    path = tmp_path / "examples.pth"
    torch.save(examples_state_dict(model), path)
    loaded = load_style_model(str(path))
    _same(model, loaded.model)
    assert loaded.style_image is None and loaded.metadata == {}
    fresh = TransformerNet()
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)  # their loader, strict
    _same(model, fresh)


def test_legacy_running_stats_keys_are_dropped(tmp_path):
    model = _model(3)
    sd = examples_state_dict(model)
    for name in ["in1", "in2", "in3", "in4", "in5", "res1.in1", "res5.in2"]:
        channels = sd[f"{name}.weight"].shape[0]
        sd[f"{name}.running_mean"] = torch.zeros(channels)
        sd[f"{name}.running_var"] = torch.ones(channels)
    path = tmp_path / "old.pth"
    torch.save(sd, path)
    _same(model, load_style_model(str(path)).model)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/stylize-pwned-marker",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_without_running_and_names_the_import(tmp_path):
    marker = "/tmp/stylize-pwned-marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    torch.save({"conv1.conv2d.weight": torch.zeros(1), "payload": _Evil()}, path)
    with pytest.raises(StyleModelError, match=r"evil\.pth: refused to load it: it would import os\.system"):
        load_style_model(str(path))
    assert not os.path.exists(marker)
    # a plain pickle (not a torch zip) carrying code is refused too, and named from its opcodes
    for protocol in (2, 4):
        with pytest.raises(StyleModelError, match=r"refused .*it would import os\.system"):
            load_style_model("raw", data=pickle.dumps(_Evil(), protocol=protocol))
    assert not os.path.exists(marker)


def test_a_text_file_is_not_a_checkpoint_rather_than_unsafe(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(StyleModelError, match=r"notes\.pth: it is not a PyTorch checkpoint: it is an HTML/XML page") as info:
        load_style_model(str(path))
    assert "refused" not in str(info.value) and "unsafe" not in str(info.value)


def test_directory_and_empty_file_say_so(tmp_path):
    with pytest.raises(StyleModelError, match="is a directory"):
        load_style_model(str(tmp_path))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(StyleModelError, match=r"empty\.pth: it is empty"):
        load_style_model(str(tmp_path / "empty.pth"))
    with pytest.raises(StyleModelError, match="is empty"):
        load_style_model("s3://b/empty.pth", opener=lambda uri: b"")


def test_key_and_shape_mismatch_lists_the_first_keys_and_shapes():
    sd = examples_state_dict(_model())
    sd["conv1.conv2d.weight"] = torch.zeros(8, 3, 9, 9)
    for key in [k for k in sd if k.startswith("res5.")]:
        del sd[key]
    sd["extra.weight"] = torch.zeros(2)
    buf = io.BytesIO()
    torch.save(sd, buf)
    with pytest.raises(StyleModelError) as info:
        load_style_model("bad.pth", data=buf.getvalue())
    msg = str(info.value)
    assert "bad.pth: it does not match TransformerNet(width=1,blocks=5)" in msg
    assert "missing keys: res5.conv1.conv2d.weight, res5.conv1.conv2d.bias, res5.in1.weight (+5 more)" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "shape mismatches: conv1.conv2d.weight (8, 3, 9, 9) (expected (32, 3, 9, 9))" in msg
    assert "\n" not in msg


def test_wrong_shapes_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(StyleModelError, match="not found"):
        load_style_model(str(tmp_path / "nope.pth"))
    sd = examples_state_dict(_model())
    sd["conv1.conv2d.weight"] = torch.zeros(8, 3, 9, 9)
    buf = io.BytesIO()
    torch.save(sd, buf)
    with pytest.raises(StyleModelError, match="does not match TransformerNet"):
        load_style_model("bad", data=buf.getvalue())
    buf = io.BytesIO()
    torch.save([1, 2, 3], buf)
    with pytest.raises(StyleModelError, match="neither"):
        load_style_model("list", data=buf.getvalue())


def test_opener_is_used_for_uris():
    data = checkpoint_bytes(_model(), style="x")
    seen = []
    loaded = load_style_model("s3://bucket/m.pth", opener=lambda uri: seen.append(uri) or data)
    assert seen == ["s3://bucket/m.pth"] and loaded.source == "s3://bucket/m.pth"
