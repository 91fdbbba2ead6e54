"""Tests for jobs/train.py: the CLI, and real Ray Train runs (2 CPU workers, 32 px images, random VGG)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.train import driver as train
from jobs.train import settings as train_settings
from jobs.common.storage import read_bytes
from stylize_core.checkpoint import load_style_model
from stylize_core.transformer_net import NetConfig, TransformerNet

FAST = ["--image-size", "32", "--vgg-weights", "random:0", "--style-layers", "relu1_2,relu2_2", "--log-every", "1"]


def _png(seed: int, shape: tuple[int, int] = (40, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _onnx_matches(onnx_data: bytes, model: TransformerNet) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(onnx_data, providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 32, 32), (2, 3, 48, 64)]:  # dynamic batch, height and width
        x = torch.rand(*shape) * 255
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        assert out.shape == shape and np.abs(out - ref).max() < 1e-2


def test_help_documents_every_option() -> None:
    parser = train_settings.build_parser()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
        assert action.option_strings[-1] in text
    for flag in ("--content", "--style-image", "--output", "--steps", "--epochs", "--workers", "--gpus-per-worker",
                 "--vgg", "--vgg-weights", "--content-layers", "--style-layers", "--checkpoint-every", "--address",
                 "--width", "--blocks", "--depthwise", "--cpus-per-worker"):
        assert flag in text
    assert "--fail-at-step" not in text  # test hooks live in the tests


def test_several_style_images_make_a_multi_style_config() -> None:
    base = ["--content", "/c", "--output", "/o"]
    args = train_settings.parse_args([*base, "--style-image", "/s/wave.jpg", "--style-image", "/s/ink.png", "--width", "0.25",
                             "--depthwise"])
    config = train.train_config_from_args(args)
    assert config.style_names == ("wave", "ink") and config.arch(2).num_styles == 2
    assert config.arch(2) == NetConfig(width=0.25, blocks=5, depthwise=True, num_styles=2)
    args = train_settings.parse_args([*base, "--style-image", "/s/a.jpg", "--style-image", "/s/b.jpg",
                             "--style-name", "one", "--style-name", "two"])
    assert train.train_config_from_args(args).style_names == ("one", "two")
    with pytest.raises(SystemExit):
        train_settings.parse_args([*base, "--style-image", "/s/a.jpg", "--style-image", "/s/b.jpg", "--style-name", "x"])


def test_cpu_plan_keeps_a_cpu_for_data_loading_or_refuses_in_one_line() -> None:
    plan = train.plan_cpus_per_worker
    assert plan(2, None, 2.0, fixed=True) == (0.5, None)  # the 2-CPU local Ray: workers share one CPU
    assert plan(1, None, 2.0, fixed=True) == (1.0, None)
    assert plan(3, None, 2.0, fixed=True) == (0.33, None)
    assert plan(4, None, 16.0, fixed=True) == (1.0, None)
    assert plan(4, None, 0.0, fixed=False) == (1.0, None)  # a cluster still scaling up from 0 CPUs
    assert plan(1, None, 1.0, fixed=True)[1] == ("this Ray has 1 CPU(s): data loading needs 1 and each of --workers 1 "
                                                 "a share of the rest: pass fewer --workers or run on a machine with "
                                                 "more CPUs")
    assert plan(2, 0.5, 2.0, fixed=True) == (0.5, None)
    cpus, refusal = plan(2, 1.0, 2.0, fixed=True)
    assert refusal == ("--workers 2 x --cpus-per-worker 1 leave 0 of this Ray's 2 CPUs for data loading, which "
                       "needs 1: pass --cpus-per-worker 0.5 (or leave it out to plan it)")
    assert plan(2, 1.0, 2.0, fixed=False) == (1.0, None)  # a remote cluster may add nodes


def test_summary_counts_a_rerun_from_where_it_resumed_and_keeps_earlier_bad_files() -> None:
    """run_fields: what every task's train_summary.json says of the run (style, predict, enhancement)."""
    bad_a, bad_b = {"uri": "c/a.jpg", "error_type": "UnidentifiedImageError"}, {"uri": "c/b.png", "error_type": "OSError"}
    state = {"step": 6, "epoch": 2, "history": [{"step": 5, "total": 2.0}, {"step": 6, "total": 1.5}],
             "skipped": [bad_a]}  # the checkpoint: an earlier run's bad file
    resumed = train.run_fields(state, {"start_step": 4, "skipped": [bad_a, bad_b]}, 12.345)
    assert resumed == {"steps": 6, "epochs": 2, "skipped_files": 2, "skipped": [bad_a, bad_b], "resumed_from_step": 4,
                       "steps_this_run": 2, "fit_seconds": 12.35, "final_losses": {"step": 6, "total": 1.5}}
    fresh = train.run_fields({"step": 2, "epoch": 0, "history": []}, {"start_step": None, "skipped": []}, 1.0)
    assert fresh["resumed_from_step"] == 0 and fresh["steps_this_run"] == 2 and fresh["final_losses"] is None
    assert fresh["skipped"] == [] and fresh["skipped_files"] == 0


def test_refuses_a_plan_that_would_hang_with_one_line(ray_local: None, tmp_path, capsys) -> None:
    (tmp_path / "c").mkdir()
    for i in range(2):
        (tmp_path / "c" / f"{i}.png").write_bytes(_png(i))
    (tmp_path / "s.png").write_bytes(_png(9))
    argv = ["--content", str(tmp_path / "c"), "--style-image", str(tmp_path / "s.png"), "--output",
            str(tmp_path / "o"), "--workers", "2", "--batch-size", "1", "--cpus-per-worker", "1", *FAST]
    assert train.main(train_settings.parse_args(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --cpus-per-worker 0.5" in err[0]
    assert not (tmp_path / "o").exists()


def _crash_at_step(step_at: int) -> Callable[[dict], None]:
    """The job's worker loop with StyleTrainer.step raising once the trainer reaches ``step_at`` (after
    that step's update and any checkpoint of the previous one). Built in a function, so cloudpickle
    ships it to the Train workers by value; it patches only the worker process it runs in (each fit
    starts its own workers), so the tests' Ray is not restarted for it."""

    def loop(loop_config: dict) -> None:
        from jobs.train.worker import train_worker_loop
        from stylize_core.training import StyleTrainer

        original = StyleTrainer.step

        def step(self, batch):  # type: ignore[no-untyped-def]
            record = original(self, batch)
            if self.step_count >= step_at:
                raise RuntimeError(f"test crash at step {self.step_count}")
            return record

        StyleTrainer.step = step
        try:
            train_worker_loop(loop_config)
        finally:
            StyleTrainer.step = original

    return loop


def test_two_workers_crash_resume_and_exports_on_s3(ray_local: None, s3_client, s3_bucket: str, monkeypatch) -> None:
    """Content, style image, checkpoints and exports on S3, as on a cluster: a fit of two workers
    crashes, and the same command resumes from its last checkpoint there."""
    for i in range(7):
        s3_client.put_object(Bucket=s3_bucket, Key=f"coco/img{i}.png", Body=_png(i))
    s3_client.put_object(Bucket=s3_bucket, Key="coco/broken.jpg", Body=b"\xff\xd8\xff\xe0 not really a jpeg" * 4)
    s3_client.put_object(Bucket=s3_bucket, Key="styles/wave.png", Body=_png(99, (64, 64)))
    out = f"s3://{s3_bucket}/models/wave"
    argv = ["--content", f"s3://{s3_bucket}/coco/", "--style-image", f"s3://{s3_bucket}/styles/wave.png",
            "--output", out, "--steps", "6", "--epochs", "100", "--batch-size", "1", "--workers", "2",
            "--checkpoint-every", "2", *FAST]  # no --cpus-per-worker: the plan leaves a CPU for data loading

    def keys() -> set[str]:
        return {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="models/").get("Contents", [])}

    # 7 good images over 2 workers: 3 per worker and epoch. Crash right after step 5.
    with monkeypatch.context() as m:
        m.setattr(train, "train_worker_loop", _crash_at_step(5))
        assert train.main(train_settings.parse_args(argv)) == 1
    assert f"models/wave/train/checkpoint_00000004/{train.STATE_FILE}" in keys()
    assert not [k for k in keys() if k.startswith("models/wave/final/")]

    assert train.main(train_settings.parse_args(argv)) == 0  # the same command resumes
    for name in ("final/style.pth", "final/style.onnx", "final/style_examples.pth", "loss_history.csv",
                 "loss_history.png", "train_summary.json"):
        assert f"models/wave/{name}" in keys()
    summary = json.loads(read_bytes(f"{out}/train_summary.json"))
    assert summary["steps"] == 6 and summary["resumed_from_step"] == 4 and summary["steps_this_run"] == 2
    assert summary["content_images"] == 8 and summary["skipped_files"] == 1
    assert summary["skipped"][0]["uri"].endswith("broken.jpg") and summary["skipped"][0]["error_type"]
    assert summary["onnx_max_abs_diff"] < 1e-2

    rows = list(csv.DictReader(io.StringIO(read_bytes(f"{out}/loss_history.csv").decode())))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]  # continuous across the crash
    assert all(int(r["images"]) == 2 for r in rows) and all(np.isfinite(float(r["total"])) for r in rows)
    assert read_bytes(f"{out}/loss_history.png").startswith(b"\x89PNG")

    loaded = load_style_model("style.pth", data=read_bytes(f"{out}/final/style.pth"))
    meta = loaded.metadata
    assert meta["steps"] == 6 and meta["style"] == "wave" and meta["loss_model"] == "vgg16/random:0"
    assert meta["training_config"]["image_size"] == 32 and meta["skipped_files"] == 1
    assert loaded.style_image is not None and loaded.style_image.shape == (64, 64, 3)

    bare = torch.load(io.BytesIO(read_bytes(f"{out}/final/style_examples.pth")), weights_only=True)
    examples_net = TransformerNet()
    examples_net.load_state_dict(bare, strict=True)  # pytorch/examples' layout, strictly
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(bare[key], value)
    _onnx_matches(read_bytes(f"{out}/final/style.onnx"), examples_net.eval())


def test_a_multi_style_slim_network_exports_its_own_files_only(tmp_path) -> None:
    """The driver's export of what a fit of two style images and a slim network ends with (a trainer's
    state after one step, as a checkpoint holds it; the Ray Train path is the one above, and
    multi-style training is in tests/stylize_core/test_training.py): no pytorch/examples file (it has
    no such network), both style images in the checkpoint, an ONNX file whose style weights select a style."""
    from stylize_core.training import StyleTrainer

    styles = [np.asarray(Image.open(io.BytesIO(_png(7, (48, 48))))), np.asarray(Image.open(io.BytesIO(_png(8, (40, 56)))))]
    args = train_settings.parse_args(["--content", "/c", "--output", str(tmp_path), "--style-image", "/s/mosaic.png",
                                      "--style-image", "/s/wave.png", "--width", "0.25", "--blocks", "2",
                                      "--steps", "1", "--batch-size", "2", *FAST])
    config = train.train_config_from_args(args)
    trainer = StyleTrainer(config, styles, device="cpu", autocast_dtype=None)
    trainer.step(torch.rand(2, 3, 32, 32) * 255)
    exported = train.export_final(trainer.state_dict(), styles, str(tmp_path), None, extra={"content_images": 2})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "final/style.onnx", "final/style.pth", "loss_history.csv", "loss_history.png"]
    assert exported["onnx_max_abs_diff"] < 1e-2
    loaded = load_style_model(str(tmp_path / "final" / "style.pth"))
    assert loaded.metadata["steps"] == 1 and loaded.style_names == ("mosaic", "wave")
    assert loaded.arch.width == 0.25 and loaded.arch.blocks == 2 and loaded.arch.num_styles == 2
    assert [im.shape for im in loaded.style_images] == [(48, 48, 3), (40, 56, 3)]

    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "final" / "style.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 32, 32) * 255
    out_wave = session.run(None, {"input": x.numpy(), "style_weights": np.array([0.0, 1.0], np.float32)})[0]
    with torch.no_grad():
        ref = loaded.select("wave").model(x).numpy()
        other = loaded.select("mosaic").model(x).numpy()
    # After one step the styles' outputs differ by about 0.01 (measured 0.013), ONNX and eager by 4e-6
    assert np.abs(out_wave - ref).max() < np.abs(ref - other).max() / 100  # the weights select that style
