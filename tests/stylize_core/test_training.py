"""Tests for stylize_core.training and stylize_core.onnx_export (random VGG weights, tiny images; the
texture loss network where a loss must mean something)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

from stylize_core.checkpoint import load_style_model
from stylize_core.onnx_export import export_onnx
from stylize_core.training import (
    StyleTrainer,
    TrainConfig,
    prepare_content,
    prepare_style,
    train_local,
)
from stylize_core.texture_net import texture_layer_names
from stylize_core.training_demo import mosaic_style_image
from stylize_core.transformer_net import TransformerNet
from stylize_core.vgg import VGGFeatures

ASSET = os.path.join(os.path.dirname(__file__), "..", "..", "stylize_core", "assets", "demo_mosaic.pth")
LAYERS = ("relu1_2", "relu2_2")


def _images(n: int, seed: int = 0, shape: tuple[int, int] = (40, 52)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        # Smooth gradients plus noise: structured enough for content loss to mean something.
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        base = np.stack([xx * 255 / shape[1], yy * 255 / shape[0], (xx + yy) * 127 / sum(shape)], -1)
        out.append(np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8))
    return out


def _config(**kw) -> TrainConfig:
    base = dict(image_size=32, batch_size=2, steps=4, epochs=100, lr=1e-2, vgg_weights="random:0",
                content_layers=("relu2_2",), style_layers=LAYERS, seed=1, log_every=1000, checkpoint_every=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    return VGGFeatures("vgg16", LAYERS, "random:0")


def test_prepare_content_resizes_short_side_and_centre_crops() -> None:
    img = np.zeros((60, 120, 3), np.uint8)
    img[:, 45:75] = 255  # a white band in the middle third of the width
    out = prepare_content(img, 30)
    assert out.shape == (30, 30, 3) and out.dtype == np.uint8
    # Short side 60 -> 30 halves the image to 30x60; the centre crop keeps columns 15..45 of it,
    # so the band (22..38 after scaling) sits in the middle of the crop.
    assert out[:, 15].min() > 200 and out[:, 0].max() < 30 and out[:, -1].max() < 30
    assert prepare_content(np.zeros((20, 20, 4), np.uint8), 32).shape == (32, 32, 3)  # upscales, drops alpha


def test_prepare_style_only_downscales() -> None:
    assert prepare_style(np.zeros((100, 50, 3), np.uint8), 40).shape == (40, 20, 3)
    assert prepare_style(np.zeros((30, 20, 3), np.uint8), 40).shape == (30, 20, 3)
    assert prepare_style(np.zeros((30, 20, 3), np.uint8), None).shape == (30, 20, 3)


def test_config_round_trips_through_asdict() -> None:
    cfg = _config(style_scales=(1.0, 0.5))
    assert TrainConfig.from_dict(asdict(cfg)) == cfg
    assert TrainConfig.from_dict({**asdict(cfg), "style_layers": ["relu1_2"]}).style_layers == ("relu1_2",)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_step_returns_losses_and_records_history(vgg: VGGFeatures) -> None:
    trainer = StyleTrainer(_config(tv_weight=1.0), _images(1)[0], device="cpu", vgg=vgg)
    assert set(trainer.style_targets) == set(LAYERS)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    record = trainer.step(torch.rand(2, 3, 32, 32) * 255)
    assert set(record) >= {"step", "epoch", "images", "content", "style", "tv", "total"}
    assert record["step"] == 1 and record["images"] == 2 and len(trainer.history) == 1
    assert record["tv"] > 0 and record["total"] == pytest.approx(record["content"] + record["style"] + record["tv"], rel=1e-5)
    assert any(not torch.equal(before[k], v) for k, v in trainer.net.state_dict().items())


def test_same_seed_same_initial_model(vgg: VGGFeatures) -> None:
    a = StyleTrainer(_config(), _images(1)[0], device="cpu", vgg=vgg)
    b = StyleTrainer(_config(), _images(1)[0], device="cpu", vgg=vgg)
    c = StyleTrainer(_config(seed=2), _images(1)[0], device="cpu", vgg=vgg)
    assert torch.equal(a.net.conv1.conv2d.weight, b.net.conv1.conv2d.weight)
    assert not torch.equal(a.net.conv1.conv2d.weight, c.net.conv1.conv2d.weight)


def test_loss_goes_down_over_a_short_run(vgg: VGGFeatures) -> None:
    cfg = _config(steps=30, lr=5e-3)
    trainer = train_local(_images(4), _images(1, seed=9)[0], cfg, device="cpu", vgg=vgg, log=None)
    totals = [r["total"] for r in trainer.history]
    assert len(totals) == 30 and trainer.step_count == 30
    assert np.mean(totals[-5:]) < 0.5 * np.mean(totals[:3])


def test_texture_loss_network_style_loss_falls_and_layers_are_recorded() -> None:
    cfg = _config(steps=30, lr=5e-3, vgg="texture", content_layers=(), style_layers=(), content_weight=1.0,
                  style_weight=1e6)
    trainer = train_local(_images(4), mosaic_style_image(64), cfg, device="cpu", log=None)
    assert trainer.loss_model == "texture/random:0"
    assert trainer.config.content_layers == ("o0y3", "o1y3") and "o3k5" in trainer.config.style_layers  # resolved
    style = [r["style"] for r in trainer.history]
    assert np.mean(style[-5:]) < 0.5 * np.mean(style[:3])


def test_epoch_limit_stops_first(vgg: VGGFeatures) -> None:
    trainer = train_local(_images(5), _images(1)[0], _config(steps=100, epochs=3), device="cpu", vgg=vgg, log=None)
    assert trainer.step_count == 6 and trainer.epoch == 3  # 5 images -> 2 full batches per epoch


def test_resume_matches_an_uninterrupted_run(vgg: VGGFeatures) -> None:
    images, style = _images(5), _images(1, seed=3)[0]
    full = train_local(images, style, _config(steps=5), device="cpu", vgg=vgg, log=None)

    saved: list[bytes] = []

    def save(trainer: StyleTrainer) -> None:
        buf = io.BytesIO()
        torch.save(trainer.state_dict(), buf)
        saved.append(buf.getvalue())

    train_local(images, style, _config(steps=3, checkpoint_every=2), device="cpu", vgg=vgg, log=None, on_checkpoint=save)
    assert len(saved) == 2  # at step 2 and at the end (step 3)
    state = torch.load(io.BytesIO(saved[-1]), weights_only=True)  # plain data only
    resumed = StyleTrainer(_config(steps=5), style, device="cpu", vgg=vgg)
    resumed.load_state_dict(state)
    assert resumed.step_count == 3 and resumed.epoch == 1 and len(resumed.history) == 3
    train_local(images, style, _config(steps=5), trainer=resumed, log=None)
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5]
    assert [r["epoch"] for r in resumed.history] == [r["epoch"] for r in full.history]
    for key, value in full.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_checkpoint_records_config_loss_model_and_style(vgg: VGGFeatures, tmp_path) -> None:
    style = np.random.default_rng(0).integers(0, 255, (600, 700, 3), dtype=np.uint8)
    trainer = StyleTrainer(_config(style_name="wave", style_size=64), style, device="cpu")
    trainer.step(torch.rand(2, 3, 32, 32) * 255)
    path = str(tmp_path / "wave.pth")
    trainer.save(path, half=True)
    loaded = load_style_model(path)
    meta = loaded.metadata
    assert meta["style"] == "wave" and meta["steps"] == 1 and meta["loss_model"] == "vgg16/random:0"
    assert TrainConfig.from_dict(meta["training_config"]) == trainer.config
    assert loaded.style_image is not None and max(loaded.style_image.shape[:2]) == 64
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), trainer.net.eval()(x), rtol=0.02, atol=1.5)  # fp16 weights


def test_bf16_autocast_and_channels_last_steps_run(vgg: VGGFeatures) -> None:
    trainer = StyleTrainer(_config(), _images(1)[0], device="cpu", vgg=vgg, autocast_dtype=torch.bfloat16,
                           channels_last=True)
    assert trainer.autocast_dtype == torch.bfloat16
    record = trainer.step(torch.rand(2, 3, 32, 32) * 255)
    assert np.isfinite(record["total"])
    assert StyleTrainer(_config(), _images(1)[0], device="cpu", vgg=vgg).autocast_dtype is None  # auto on CPU


def test_onnx_export_matches_pytorch_at_two_sizes(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = TransformerNet().eval()
    path = export_onnx(model, str(tmp_path / "m.onnx"), example_size=(64, 64))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 64), (2, 3, 96, 128)]:
        x = torch.rand(*shape) * 255
        out = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        assert out.shape == ref.shape == shape
        assert np.abs(out - ref).max() < 1e-2


def test_mosaic_style_image_is_deterministic_and_textured() -> None:
    a, b = mosaic_style_image(64, cells=20), mosaic_style_image(64, cells=20)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a.std() > 30 and len(np.unique(a.reshape(-1, 3), axis=0)) > 10


def test_demo_cli_writes_a_loadable_fp16_checkpoint(tmp_path) -> None:
    out, preview = tmp_path / "demo.pth", tmp_path / "preview.png"
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    proc = subprocess.run(
        [sys.executable, "-m", "stylize_core.training_demo", "--demo", str(out), "--steps", "2", "--image-size", "32",
         "--style-layers", "o0k1", "--preview", str(preview)],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = load_style_model(str(out))
    assert loaded.metadata["steps"] == 2 and loaded.metadata["demo"] is True
    assert preview.stat().st_size > 0


@pytest.mark.skipif(not os.path.exists(ASSET), reason="demo checkpoint not built yet")
def test_shipped_demo_checkpoint_stylises() -> None:
    assert 3_000_000 < os.path.getsize(ASSET) < 3_800_000  # fp16
    loaded = load_style_model(ASSET)
    meta = loaded.metadata
    assert meta["style"] == "demo_mosaic" and meta["loss_model"] == "texture/random:0"
    assert loaded.style_image is not None
    x = torch.from_numpy(prepare_content(_images(1, shape=(80, 80))[0], 64)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        y = loaded.model(x).clamp(0, 255)  # (1, 3, 64, 64)
    assert y.std() > 10  # not a constant image
    assert (y - x).abs().mean() > 10  # visibly changed


@pytest.mark.parametrize("name, argv", [("demo_mosaic", []), ("demo_mosaic_slim", ["--width", "0.25", "--steps", "600"])])
def test_the_demo_command_as_documented_reproduces_the_shipped_recipe(name, argv) -> None:
    """stylize_core/assets/README.md's commands (the defaults, and the slim line) name the settings
    the shipped files were trained with."""
    from stylize_core.training_demo import parser

    args = parser().parse_args(["--demo", "x.pth", *argv])
    cfg = load_style_model(os.path.join(os.path.dirname(ASSET), f"{name}.pth")).metadata["training_config"]
    assert cfg["vgg"] == args.vgg == "texture"
    for key in ("steps", "image_size", "batch_size", "lr", "content_weight", "style_weight", "tv_weight", "width",
                "blocks", "depthwise"):
        assert cfg[key] == getattr(args, key), key
    assert args.style_layers == "" and cfg["style_layers"] == tuple(texture_layer_names())  # the network's own


def test_multi_style_training_cycles_styles_and_saves_a_selectable_checkpoint(vgg: VGGFeatures, tmp_path) -> None:
    styles = [_images(1, seed=s, shape=(30, 30))[0] for s in (3, 4, 5)]
    cfg = _config(steps=3, width=0.25, blocks=2, style_names=("a", "b", "c"))
    trainer = train_local(_images(4), styles, cfg, device="cpu", vgg=vgg, log=None)
    assert trainer.arch.num_styles == 3 and trainer.style_targets["relu1_2"].shape[0] == 3
    # every style's scale/shift was trained (images cycle through the styles), not only the first
    w = trainer.net.in1.weight.detach()  # (3, 8)
    assert all(not torch.allclose(w[k], torch.ones_like(w[k])) for k in range(3))
    path = tmp_path / "multi.pth"
    trainer.save(str(path))
    loaded = load_style_model(str(path))
    assert loaded.style_names == ("a", "b", "c") and loaded.needs_selection
    assert TrainConfig.from_dict(loaded.metadata["training_config"]) == cfg
    np.testing.assert_array_equal(loaded.select("b").style_image, styles[1])
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded.select("c").model(x), trainer.net.eval()(x, torch.tensor([0.0, 0.0, 1.0])))


def test_slim_single_style_training_records_its_architecture(vgg: VGGFeatures, tmp_path) -> None:
    trainer = train_local(_images(2), _images(1)[0], _config(steps=1, width=0.5, blocks=3), device="cpu", vgg=vgg,
                          log=None)
    path = str(tmp_path / "slim.pth")
    trainer.save(path)
    loaded = load_style_model(path)
    assert loaded.arch.width == 0.5 and loaded.arch.blocks == 3 and not loaded.multi_style
    assert loaded.metadata["style"] == "style" and loaded.style_names == ("style",)


SLIM_ASSET = os.path.join(os.path.dirname(ASSET), "demo_mosaic_slim.pth")


@pytest.mark.skipif(not os.path.exists(SLIM_ASSET), reason="slim demo checkpoint not built yet")
def test_shipped_slim_demo_checkpoint_stylises_like_its_recipe() -> None:
    loaded = load_style_model(SLIM_ASSET)
    meta, full = loaded.metadata, load_style_model(ASSET).metadata
    assert loaded.arch.width == 0.25 and loaded.arch.blocks == 5 and not loaded.multi_style
    assert meta["style"] == "demo_mosaic_slim" and meta["loss_model"] == "texture/random:0"
    # the same recipe as the full demo, apart from the architecture and half the steps
    slim_cfg, full_cfg = meta["training_config"], full["training_config"]
    same = {k: v for k, v in slim_cfg.items() if k in full_cfg and k not in ("style_name", "width", "steps")}
    assert same == {k: full_cfg[k] for k in same} and len(same) == 19
    assert (slim_cfg["width"], slim_cfg["blocks"], slim_cfg["style_names"], slim_cfg["steps"]) == (0.25, 5, (), 600)
    np.testing.assert_array_equal(loaded.style_image, load_style_model(ASSET).style_image)
    x = torch.from_numpy(prepare_content(_images(1, shape=(80, 80))[0], 64)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        y = loaded.model(x).clamp(0, 255)  # (1, 3, 64, 64)
    assert y.std() > 10 and (y - x).abs().mean() > 10
