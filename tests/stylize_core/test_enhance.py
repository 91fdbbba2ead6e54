"""Enhancement networks: shapes, checkpoints, ONNX, the Stylizer with output scales, degradations, PSNR/SSIM."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stylize_core.builder import SetupError, StylizerSpec
from stylize_core.checkpoint import StyleModelError, load_style_model
from stylize_core.degrade import Degradation, add_noise, crop_to_multiple, jpeg, task_degradation, upscale
from stylize_core.enhance_checkpoint import enhance_checkpoint_bytes, save_enhance_model
from stylize_core.enhance_eval import evaluate, luminance, psnr, ssim
from stylize_core.enhance_net import EnhanceArch, EnhanceNet, OutputTooLarge, check_output_pixels
from stylize_core.registry import build_stylizer
from stylize_core.stylizer import Stylizer, StylizerConfig


def tiny_net(task: str, seed: int = 0, **arch) -> EnhanceNet:
    """A small network whose tail is not zero, so it changes its baseline visibly."""
    scale = {"sr2": 2, "sr4": 4, "denoise": 1, "deblock": 1}[task]
    torch.manual_seed(seed)
    net = EnhanceNet(EnhanceArch(scale=scale, channels=arch.pop("channels", 8), blocks=arch.pop("blocks", 1), **arch))
    torch.nn.init.normal_(net.tail.weight, 0.0, 0.05)
    return net.eval()


def tiny_checkpoint(path, task: str, seed: int = 0, **arch) -> str:
    save_enhance_model(tiny_net(task, seed, **arch), str(path), task, task_degradation(task), note="test")
    return str(path)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth image with edges (random pixels are no photograph: interpolation has nothing to use)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    img = np.stack([128 + 100 * np.sin(xx / (5 + 3 * c) + yy / (7 + c) + rng.uniform(0, 6)) for c in range(3)], -1)
    img[h // 3 : h // 2, w // 4 : w // 2] = (220, 40, 60)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("task,arch", [("sr2", {}), ("sr4", {}), ("denoise", {}), ("deblock", {"unshuffle": 2})])
def test_output_shapes_for_odd_inputs(task, arch):
    net = tiny_net(task, **arch)
    x = torch.rand(2, 3, 33, 17) * 255  # (B, 3, H, W), odd sides
    with torch.no_grad():
        y = net(x)
    s = net.scale
    assert y.shape == (2, 3, 33 * s, 17 * s)
    assert float(y.std()) > 10  # not a constant


def test_untrained_network_is_its_baseline():
    x = torch.rand(1, 3, 20, 24) * 255
    sr = EnhanceNet(EnhanceArch(scale=4, channels=8, blocks=2))
    restore = EnhanceNet(EnhanceArch(scale=1, channels=8, blocks=2, unshuffle=2))
    with torch.no_grad():
        up = torch.nn.functional.interpolate(x, scale_factor=4.0, mode="bicubic", align_corners=False)
        assert torch.allclose(sr(x), up, atol=1e-4)
        assert torch.allclose(restore(x), x, atol=1e-4)


def test_arch_validation():
    with pytest.raises(ValueError):
        EnhanceArch(scale=3)
    with pytest.raises(ValueError):
        EnhanceArch(scale=2, unshuffle=2)


def test_checkpoint_round_trip_and_metadata(tmp_path):
    net = tiny_net("sr4", channels=6, blocks=2)
    path = tiny_checkpoint(tmp_path / "sr4.pth", "sr4", channels=6, blocks=2)
    sm = load_style_model(path)
    assert sm.enhance.task == "sr4" and sm.enhance.scale == 4 and sm.enhance.degradation == task_degradation("sr4")
    assert sm.arch.to_dict() == {"scale": 4, "channels": 6, "blocks": 2, "unshuffle": 1}
    assert sm.name == "sr4" and sm.metadata["note"] == "test" and len(sm.sha256) == 64
    x = torch.rand(1, 3, 9, 13) * 255
    with torch.no_grad():
        assert torch.equal(sm.model(x), net(x))
    # half-precision checkpoints are promoted to float32 and stay close
    half = enhance_checkpoint_bytes(net, "sr4", task_degradation("sr4"), half=True)
    with torch.no_grad():
        assert float((load_style_model("h", data=half).model(x) - net(x)).abs().max()) < 1.0


def test_checkpoint_refusals(tmp_path):
    net = tiny_net("sr2")
    with pytest.raises(ValueError, match="disagree"):
        enhance_checkpoint_bytes(net, "sr4", task_degradation("sr4"))
    good = torch.load(io.BytesIO(enhance_checkpoint_bytes(net, "sr2", task_degradation("sr2"))), weights_only=True)
    for change, message in [({"task": "colourise"}, "unknown task"), ({"scale": 4}, "disagree"),
                            ({"arch": {"scale": 2, "channels": 9, "blocks": 1}}, "does not match EnhanceNet"),
                            ({"version": 99}, "newer")]:
        buf = io.BytesIO()
        torch.save({**good, **change}, buf)
        with pytest.raises(StyleModelError, match=message):
            load_style_model("bad.pth", data=buf.getvalue())


def test_onnx_round_trip(tmp_path):
    pytest.importorskip("onnxruntime")
    from stylize_core.backends import make_backend

    for task, arch in (("sr4", {}), ("denoise", {"unshuffle": 2})):
        net = tiny_net(task, **arch)
        backend = make_backend(net, "onnxruntime")
        x = torch.rand(1, 3, 21, 15) * 255  # odd sides: the export is not traced at this size
        with torch.no_grad():
            ref = net(x)
        out = backend(x)
        assert out.shape == ref.shape and float((out - ref).abs().max()) < 0.05


def _model(path):
    return load_style_model(str(path))


def test_stylizer_runs_sr_and_restoration_and_crops_outputs(tmp_path):
    sr4 = _model(tiny_checkpoint(tmp_path / "a.pth", "sr4"))
    den = _model(tiny_checkpoint(tmp_path / "b.pth", "denoise"))
    images = [photo(17, 33), photo(40, 40, 1), photo(17, 33, 2)]
    for cfg in (StylizerConfig(device="cpu", metrics=False),
                StylizerConfig(device="cpu", metrics=False, cpu_max_pad_fraction=0.5, max_pad_fraction=0.5)):
        st = Stylizer({"sr4": sr4, "den": den}, None, cfg)
        out = st.stylize_many(images)
        assert [r.image.shape for r in out["sr4"]] == [(68, 132, 3), (160, 160, 3), (68, 132, 3)]
        assert [r.image.shape for r in out["den"]] == [im.shape for im in images]
        # each output is what the network makes of that image alone (padding is cropped at the right scale)
        with torch.no_grad():
            alone = sr4.model(torch.from_numpy(images[0]).permute(2, 0, 1)[None].float())
        alone = alone.clamp(0, 255).round().byte()[0].permute(1, 2, 0).numpy()
        diff = np.abs(out["sr4"][0].image.astype(int) - alone.astype(int))
        assert np.percentile(diff, 50) <= 1
    # the pixel budget of a batch counts output pixels
    st = Stylizer({"sr4": sr4}, None, StylizerConfig(device="cpu", metrics=False, cpu_max_batch_pixels=2 * 40 * 40 * 16))
    assert len(st.plan([(40, 40)] * 4)) == 2
    # strength 0 gives the bicubic upscale of the input
    st = Stylizer({"sr4": sr4}, None, StylizerConfig(device="cpu", metrics=False, strength=0.0))
    up = torch.nn.functional.interpolate(torch.from_numpy(images[1]).permute(2, 0, 1)[None].float(), scale_factor=4.0,
                                         mode="bicubic").clamp(0, 255).round()[0].permute(1, 2, 0).numpy()
    assert np.abs(st.stylize([images[1]], "sr4")[0].image.astype(float) - up).max() <= 1


def test_stylizer_metrics_compare_at_the_input_size(tmp_path):
    from stylize_core.loss_network import build_loss_network

    sr2 = _model(tiny_checkpoint(tmp_path / "a.pth", "sr2"))
    st = Stylizer({"sr2": sr2}, build_loss_network("texture:0"), StylizerConfig(device="cpu", metrics_short_side=32))
    (r,) = st.stylize([photo(30, 26)], "sr2")
    assert r.image.shape == (60, 52, 3) and r.measured and np.isfinite(r.content_loss) and np.isnan(r.style_loss)


def test_output_pixel_guard():
    check_output_pixels(100, 100, 4, 160_000)
    with pytest.raises(OutputTooLarge, match="400x400 = 160000") as info:
        check_output_pixels(100, 100, 4, 159_999)
    assert info.value.error_type == "too_large"


def test_optimize_method_refuses_an_enhancement_network(tmp_path):
    path = tiny_checkpoint(tmp_path / "a.pth", "sr2")
    spec = StylizerSpec(styles={"up": path}, method="optimize", metrics=False, device="cpu")
    with pytest.raises(SetupError, match="enhancement network .*--method optimize"):
        build_stylizer(spec, lambda uri: open(uri, "rb").read())


# --- degradations --------------------------------------------------------------------------------


def test_noise_has_the_asked_sigma():
    flat = np.full((256, 256, 3), 128, np.uint8)
    for sigma in (5.0, 25.0):
        noisy = add_noise(flat, sigma, 0)
        assert abs(float(noisy.astype(float).std()) - sigma) < 0.05 * sigma
    assert np.array_equal(add_noise(flat, 10, 3), add_noise(flat, 10, 3))  # seeded


def test_jpeg_quality_orders_the_error():
    img = photo(64, 64)
    errors = [psnr(img, jpeg(img, q)) for q in (10, 20, 40, 90)]
    assert errors == sorted(errors) and errors[0] < 35 < errors[-1]


def test_downscale_scale_and_crop():
    img = photo(35, 50)
    for scale, mode in ((2, "bicubic"), (4, "area")):
        d = Degradation(scale=scale, downscale=mode)
        out = d(img, 0)
        assert out.shape == (35 // scale, 50 // scale, 3)
        assert crop_to_multiple(img, scale).shape == (35 // scale * scale, 50 // scale * scale, 3)
    # area downscaling by 2 is the mean of each 2x2 block
    area = Degradation(scale=2, downscale="area")(img, 0).astype(float)
    blocks = crop_to_multiple(img, 2).astype(float).reshape(17, 2, 25, 2, 3).mean(axis=(1, 3))
    assert np.abs(area - blocks).max() <= 1.0
    assert upscale(area.astype(np.uint8), 2).shape == (34, 50, 3)


def test_degradation_ranges_eval_point_and_record():
    d = task_degradation("denoise")
    assert d.noise_sigma == (5.0, 50.0) and d.at_eval().noise_sigma == (25.0, 25.0)
    assert task_degradation("deblock").at_eval().jpeg_quality == (20.0, 20.0)
    assert Degradation.from_dict(d.to_dict()) == d
    real = task_degradation("sr4", compound=True)
    assert real.blur_sigma[1] > 0 and real.noise_sigma[1] > 0 and real.jpeg_quality is not None
    assert "blur" in real.describe() and "JPEG" in real.describe()
    with pytest.raises(ValueError):
        Degradation(noise_sigma=(10.0, 5.0))


# --- PSNR / SSIM ---------------------------------------------------------------------------------


def test_psnr_and_ssim_match_scikit_image_on_luminance():
    a = photo(48, 64)
    b = add_noise(a, 12, 1)
    ya, yb = luminance(a), luminance(b)
    # BT.601 luminance as MATLAB's rgb2ycbcr computes it
    r, g, bl = (a[..., c].astype(float) for c in range(3))
    assert np.allclose(ya, 16 + (65.481 * r + 128.553 * g + 24.966 * bl) / 255)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-9)
    expected = structural_similarity(ya, yb, data_range=255, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)


def test_evaluate_scores_output_and_baseline():
    images = [photo(40, 36), photo(33, 30, 1)]
    identity = lambda xs: list(xs)  # noqa: E731
    (s1, s2) = evaluate(images, task_degradation("denoise"), identity, keys=["a", "b"])
    # restoring nothing scores exactly the degraded input, which is the restoration baseline
    assert s1.psnr == s1.baseline_psnr and s1.ssim == s1.baseline_ssim and 20 < s1.psnr < 28
    up = evaluate(images, task_degradation("sr2"), lambda xs: [upscale(x, 2) for x in xs])
    assert up[1].reference.shape == (32, 30, 3) and up[1].psnr == up[1].baseline_psnr


@pytest.mark.parametrize("task", ["sr2", "sr4", "denoise", "deblock"])
def test_shipped_demo_checkpoints_meet_their_goal_on_a_held_out_photo(task):
    from pathlib import Path

    from stylize_core.enhance_demo import EVAL_PHOTOS, TRAIN_PHOTOS, photo as skimage_photo

    assert not set(EVAL_PHOTOS) & set(TRAIN_PHOTOS)
    sm = load_style_model(str(Path(__file__).resolve().parents[2] / "stylize_core" / "assets" / f"enhance_{task}.pth"))
    assert sm.enhance.task == task and sm.metadata["eval_photos"] == list(EVAL_PHOTOS)
    clean = skimage_photo("astronaut")[160:288, 160:288]  # held out: never trained on

    def run(images):
        with torch.no_grad():
            return [sm.model(torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float()).clamp(0, 255).round()
                    .byte()[0].permute(1, 2, 0).numpy() for x in images]

    (score,) = evaluate([clean], sm.enhance.degradation, run, keys=["astronaut"])
    # issue 20's goals on this one crop (measured 2026-12-07: +4.07, +1.68, +4.96, +1.89 dB)
    goal = {"sr2": 1.5, "sr4": 0.8, "denoise": 3.0, "deblock": 1.0}[task]
    assert score.psnr > score.baseline_psnr + goal and score.ssim > score.baseline_ssim
