"""Style encodings made once per run (stylize_core.style_encoding, registry.encode_styles): a stylizer
built from them reads no style image, runs no encoder pass on one, and stylises and measures exactly as
one that encodes its style images itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from stylize_core.builder import SetupError, StylizerSpec
from stylize_core.image_io import encode_image, resize_max_side
from stylize_core.registry import METHODS, build_stylizer, encode_styles
from stylize_core.style_encoding import ENCODED_METHODS
from stylize_core.video.synthetic import sample_photo


def test_the_drivers_list_of_encoding_methods_is_the_registrys():
    assert {name for name, m in METHODS.items() if m.encode is not None} == ENCODED_METHODS


def _photo(name: str, side: int, crop: tuple[int, int] = (0, 0)) -> np.ndarray:
    image = resize_max_side(sample_photo(name), 160)
    y, x = crop
    return np.ascontiguousarray(image[y:y + side, x:x + side + 8])


@pytest.mark.parametrize("method", ["adain", "predict"])
def test_a_stylizer_built_from_the_runs_encodings_reads_no_style_image_and_matches(method, tmp_path):
    styles = {"wave": tmp_path / "wave.png", "ink": tmp_path / "ink.png"}
    styles["wave"].write_bytes(encode_image(_photo("chelsea", 64, (20, 40)), "png"))
    styles["ink"].write_bytes(encode_image(_photo("rocket", 64, (30, 10)), "png"))
    spec = StylizerSpec(styles={}, style_images={n: str(p) for n, p in styles.items()}, method=method,
                        mixes={"both": {"wave": 0.5, "ink": 0.5}}, vgg="texture", vgg_weights="random:0", metrics_ratio=True,
                        metrics_size=32, device="cpu", alpha=0.8)
    style_uris = {str(p) for p in styles.values()}
    reads: list[str] = []

    def opener(uri: str) -> bytes:
        reads.append(uri)
        return Path(uri).read_bytes()

    encodings = encode_styles(spec, opener)
    assert encodings is not None and encodings.passes == 2 and sorted(encodings.codes) == ["ink", "wave"]
    assert sorted(encodings.grams) == ["ink", "wave"] and encodings.loss_model
    wave = encodings.grams["wave"]  # the style targets carry the statistics distance's means and stds too
    assert sorted(wave.means) == sorted(wave.stds) == sorted(wave.grams)
    assert all(m.shape == (1, g.shape[1]) and m.dtype == np.float32 for m, g in
               zip((wave.means[k] for k in sorted(wave.grams)), (wave.grams[k] for k in sorted(wave.grams))))
    alone = build_stylizer(spec, opener)  # the local CLI: it reads and encodes its style images itself
    reads.clear()
    shared = build_stylizer(dataclasses.replace(spec, encodings=encodings), opener)  # an actor of a Ray job
    assert not style_uris & set(reads)
    assert (alone.stylizer.style_encodes, shared.stylizer.style_encodes) == (2, 0)
    assert shared.model_sha256 == alone.model_sha256 and len(set(shared.model_sha256.values())) == 3

    content = _photo("astronaut", 40, (30, 50))
    want = alone.stylizer.stylize_many([content], measure=[True])
    got = shared.stylizer.stylize_many([content], measure=[True])
    for style in ("wave", "ink", "both"):
        a, b = want[style][0], got[style][0]
        assert np.ptp(a.image) > 60  # the demo models style: a comparison that can fail
        assert np.array_equal(a.image, b.image), style
        assert np.isfinite(a.style_loss) and b.style_loss == pytest.approx(a.style_loss, rel=1e-5)
        assert a.style_stat_distance > 0 and b.style_stat_distance == pytest.approx(a.style_stat_distance, rel=1e-5)
        assert np.isfinite(a.style_stat_ratio) and b.style_stat_ratio == pytest.approx(a.style_stat_ratio, rel=1e-5)
    assert len({round(got[s][0].style_stat_distance, 6) for s in ("wave", "ink", "both")}) == 3
    assert not np.array_equal(got["wave"][0].image, got["ink"][0].image)


def test_encodings_of_another_model_or_missing_a_style_image_are_refused(tmp_path):
    path = tmp_path / "wave.png"
    path.write_bytes(encode_image(_photo("chelsea", 48), "png"))
    spec = StylizerSpec(styles={}, style_images={"wave": str(path)}, method="adain", metrics=False, device="cpu")
    encodings = encode_styles(spec, lambda uri: Path(uri).read_bytes())
    assert encodings.grams == {} and encodings.summary()["style_images"]["wave"]["gram_layers"] == []
    opener = lambda uri: Path(uri).read_bytes()  # noqa: E731
    with pytest.raises(SetupError, match="style encodings of"):
        build_stylizer(dataclasses.replace(spec, encodings=dataclasses.replace(encodings, model_id="0" * 64)), opener)
    with pytest.raises(SetupError, match="style encodings of"):  # made by the other method
        build_stylizer(dataclasses.replace(spec, method="predict", encodings=encodings), opener)
    more = dataclasses.replace(spec, style_images={"wave": str(path), "ink": str(path)}, encodings=encodings)
    with pytest.raises(SetupError, match=r"lack style images \['ink'\]"):
        build_stylizer(more, opener)
    assert encode_styles(dataclasses.replace(spec, method="feedforward", style_images={}), opener) is None
