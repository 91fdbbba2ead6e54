"""stylize_core.image_formats: alpha, 16 bits, grey, palettes, ICC profiles and EXIF/XMP from decode to
encode, and the Stylizer's float path for 16-bit inputs."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms
from pixel_samples import (H, W, LINEAR_NAME, disc_alpha, grey16_png, grey_alpha_tiff16, la16_png, linear_profile,
                           palette_rgba_png, photo, planar_rgb_tiff16, png16, rgb16, rgba_png, save, tiff16)

from stylize_core import icc, image_formats
from stylize_core.image_encode import _with_chunks, encode_image_full
from stylize_core.image_formats import (ALPHA_FLATTENED, ALPHA_KEPT, PixelFormat, composite_any, decode_image_full,
                                        network_input, resized)
from stylize_core.image_io import ImageDecodeError, decode_image, encode_image
from stylize_core.masks import MaskError


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _cv(data: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_rgba_keeps_its_alpha_exactly_and_hidden_colour_is_the_visible_mean():
    data, rgba = rgba_png()
    d = decode_image_full(data)
    assert d.format.label == "RGBA" and d.format.bits == 8 and d.pixels.dtype == np.uint8 and d.pixels.flags.writeable
    assert np.array_equal(d.format.alpha, rgba[:, :, 3])
    visible, hidden = rgba[:, :, 3] > 0, rgba[:, :, 3] == 0
    assert np.array_equal(d.pixels[visible], rgba[:, :, :3][visible])
    fill = d.pixels[hidden]
    assert (fill == fill[0]).all() and fill[0].min() > 40  # one colour, not the stored black
    out, state = encode_image_full(d.pixels, d.format, "png")
    back = np.asarray(_open(out))
    assert state == ALPHA_KEPT and back.shape == (H, W, 4) and np.array_equal(back[:, :, 3], rgba[:, :, 3])
    tiff, state = encode_image_full(d.pixels, d.format, "tiff")
    assert state == ALPHA_KEPT and np.array_equal(np.asarray(_open(tiff)), back)  # lossless, alpha included
    webp, state = encode_image_full(d.pixels, d.format, "webp")
    assert state == ALPHA_KEPT and np.array_equal(np.asarray(_open(webp))[:, :, 3], rgba[:, :, 3])
    jpeg, state = encode_image_full(d.pixels, d.format, "jpeg", background=(0, 0, 0))
    flat = np.asarray(_open(jpeg)).astype(int)
    assert state == ALPHA_FLATTENED and flat.shape == (H, W, 3)
    assert flat[hidden].mean() < 8 and abs(flat[rgba[:, :, 3] == 255].mean() - rgba[:, :, :3][rgba[:, :, 3] == 255].mean()) < 3
    # the old decode still composites on white (training, contact sheets, style images)
    assert (decode_image(data)[hidden] == 255).all()


def test_16_bit_png_and_tiff_stay_16_bit_through_float():
    want = rgb16()
    for data in (png16(want), tiff16(want)):
        d = decode_image_full(data)
        assert d.format.label == "RGB;16" and d.format.bits == 16 and np.array_equal(d.pixels, want)
        x = network_input(d.pixels)  # what a feed-forward network is given
        assert x.dtype == np.float32 and len(np.unique(x)) > len(np.unique(np.rint(x)))  # finer than 8 bits
        out, _ = encode_image_full(x, d.format, "png")
        assert np.array_equal(_cv(out)[:, :, ::-1], want)  # float -> 16-bit png is exact
        assert np.array_equal(_cv(encode_image_full(x, d.format, "tiff")[0])[:, :, ::-1], want)  # 16-bit tiff
        eight, _ = encode_image_full(x, d.format, "jpeg")
        assert _open(eight).mode == "RGB"
    alpha = (disc_alpha().astype(np.uint16) * 257 - 3).clip(0).astype(np.uint16)
    d = decode_image_full(png16(want, alpha))
    assert d.format.label == "RGBA;16" and np.array_equal(d.format.alpha, alpha)
    out, state = encode_image_full(network_input(d.pixels), d.format, "png")
    back = _cv(out)
    assert state == ALPHA_KEPT and back.dtype == np.uint16 and np.array_equal(back[:, :, 3], alpha)


def test_grey_comes_back_grey_and_16_bit_grey_stays_16_bit():
    data, grey = grey16_png()
    d = decode_image_full(data)
    assert d.format.grey and d.format.bits == 16 and np.array_equal(d.pixels[:, :, 2], grey)
    out, state = encode_image_full(network_input(d.pixels), d.format, "png")
    img = _open(out)
    assert state == "" and img.mode.startswith("I") and np.array_equal(np.asarray(img), grey)
    d8 = decode_image_full(save(Image.fromarray(photo()[:, :, 0], "L"), "PNG"))
    assert d8.format.label == "L" and d8.pixels.shape == (H, W, 3)
    styled = d8.pixels.copy()
    styled[:, :, 0] = 0  # colour the "style" added: the output is its luma
    assert _open(encode_image_full(styled, d8.format, "png")[0]).mode == "L"
    assert _open(encode_image_full(styled, d8.format, "jpeg")[0]).mode == "L"
    data, grey, alpha = la16_png()  # 16-bit grey + alpha: grey and both planes exact
    d = decode_image_full(data)
    assert (d.format.label, d.format.grey, d.format.bits) == ("LA;16", True, 16)
    assert np.array_equal(d.pixels[:, :, 1], grey) and np.array_equal(d.format.alpha, alpha)
    back = _cv(encode_image_full(network_input(d.pixels), d.format, "png")[0])
    assert back.dtype == np.uint16 and np.array_equal(back[:, :, 3], alpha) and np.array_equal(back[:, :, 0], grey)
    la = decode_image_full(save(Image.fromarray(np.dstack([photo()[:, :, 0], disc_alpha()]), "LA"), "PNG"))
    out = _open(encode_image_full(la.pixels, la.format, "png")[0])
    assert out.mode == "LA" and np.array_equal(np.asarray(out)[:, :, 1], disc_alpha())


def test_a_palette_with_alpha_comes_back_rgba():
    d = decode_image_full(palette_rgba_png())
    assert d.format.label in ("RGBA", "P+transparency") and d.format.alpha is not None
    src = _open(palette_rgba_png()).convert("RGBA")
    assert np.array_equal(d.format.alpha, np.asarray(src)[:, :, 3])
    out = _open(encode_image_full(d.pixels, d.format, "png")[0])
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[:, :, 3], np.asarray(src)[:, :, 3])
    opaque = decode_image_full(save(Image.fromarray(photo()).quantize(32), "PNG"))
    assert opaque.format.label == "P" and opaque.format.alpha is None and opaque.format.plain


def test_an_icc_profile_is_converted_to_srgb_and_the_output_tagged_srgb(monkeypatch):
    flat = np.full((H, W, 3), 128, np.uint8)
    d = decode_image_full(save(Image.fromarray(flat), "PNG", icc_profile=linear_profile()))
    assert d.format.profile == LINEAR_NAME and not d.format.plain
    assert abs(float(d.pixels.mean()) - 188) <= 2  # linear 50 % is sRGB 188: the pixels were converted
    for fmt in ("png", "jpeg", "webp", "tiff"):
        out = _open(encode_image_full(d.pixels, d.format, fmt)[0])
        tagged = ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(tagged), fmt
    # 16 bits: a ramp within three 8-bit steps stays a ramp, converted in float from the profile's curves
    ramp = np.repeat(np.linspace(30000, 30600, W, dtype=np.uint16)[None, :, None], 3, axis=2)
    ramp = np.ascontiguousarray(np.repeat(ramp, 4, axis=0))
    deep = _with_chunks(png16(ramp), [(b"iCCP", b"linear\0\0" + zlib.compress(linear_profile()))])
    linear = ramp[0, :, 1] / 65535
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055) * 65535
    d16 = decode_image_full(deep)
    assert d16.format.profile == LINEAR_NAME and d16.pixels.dtype == np.uint16
    row = d16.pixels[0, :, 1].astype(np.int64)
    assert (np.diff(row) > 0).all() and np.abs(row - srgb).max() < 32  # an eighth of an 8-bit step
    for fmt in ("png", "tiff"):  # 16-bit outputs are tagged too
        out = _open(encode_image_full(network_input(d16.pixels), d16.format, fmt)[0])
        assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(out.info["icc_profile"]))), fmt
    # ... and as littlecms converts the same profile at 8 bits
    eight = decode_image_full(save(Image.fromarray((ramp // 257).astype(np.uint8)), "PNG", icc_profile=linear_profile()))
    lin8 = (ramp[0, :, 1] // 257) / 255
    assert np.abs(eight.pixels[0, :, 1] - 255 * (1.055 * lin8 ** (1 / 2.4) - 0.055)).max() < 1
    # profiles that are not matrix/TRC: littlecms's 8-bit transform, interpolated
    monkeypatch.setattr(icc, "_shaper", lambda icc: None)
    row = decode_image_full(deep).pixels[0, :, 1].astype(np.int64)
    assert (np.diff(row) >= 0).all() and np.abs(row - srgb).max() < 257
    nameless = decode_image_full(save(Image.fromarray(flat), "PNG", icc_profile=linear_profile(described=False)))
    assert nameless.format.profile == "unnamed profile" and abs(float(nameless.pixels.mean()) - 188) <= 2
    plain = decode_image_full(save(Image.fromarray(flat), "PNG"))
    assert plain.format.plain and "icc_profile" not in _open(encode_image_full(plain.pixels, plain.format, "png")[0]).info


def test_exif_and_xmp_are_carried_with_the_orientation_reset():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "PixCam"
    exif.get_ifd(0x8769)[0x8827] = 400  # ISO, in the Exif sub-IFD
    exif.get_ifd(0x8769)[0x9003] = "2026:12:07 10:00:00"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6" dc:title="t"/></x:xmpmeta>'
    data = save(Image.fromarray(photo()), "JPEG", exif=exif, xmp=xmp)
    d = decode_image_full(data)
    assert d.pixels.shape == (W, H, 3) and d.size == (W, H)  # upright
    assert np.array_equal(d.pixels, decode_image(data))
    for fmt in ("jpeg", "png", "webp", "tiff"):
        encoded = encode_image_full(d.pixels, d.format, fmt)[0]
        out = _open(encoded)
        got = out.getexif()
        assert got.get(0x0112) in (None, 1) and got.get(0x010F) == "PixCam", fmt  # tiff: no orientation tag is upright
        assert got.get_ifd(0x8769).get(0x8827) == 400 and got.get_ifd(0x8769).get(0x9003) == "2026:12:07 10:00:00", fmt
        xmp_out = out.info.get("xmp") or (out.tag_v2.get(700) if fmt == "tiff" else b"")
        assert b'tiff:Orientation="1"' in bytes(xmp_out or b""), fmt
        if fmt == "tiff":  # 16 bits too (tifffile writes both); the pixels are the image's
            assert np.array_equal(np.asarray(out.convert("RGB")), d.pixels)
            sixteen = _open(encode_image_full(d.pixels.astype(np.float32), d.format, "tiff")[0])
            assert sixteen.getexif().get_ifd(0x8769).get(0x8827) == 400 and 700 in sixteen.tag_v2
    assert not decode_image_full(save(Image.fromarray(photo()), "JPEG")).format.exif
    # a link to IFD1 (the camera's thumbnail of the unstylised photo) is cut; the bytes keep their offsets
    tiff = bytearray(exif.tobytes()[6:])
    end = "<" if tiff[:2] == b"II" else ">"
    link = 8 + 2 + 12 * struct.unpack(end + "H", tiff[8:10])[0]
    tiff[link : link + 4] = struct.pack(end + "I", 8)
    reset = image_formats._orientation_reset(bytes(tiff))
    assert len(reset) == len(tiff) and reset[link : link + 4] == b"\0\0\0\0"
    assert Image.Exif().load(reset) is None and image_formats._orientation_reset(b"II*\0\xff\xff\0\0") == b""


def test_an_odd_16_bit_tiff_layout_is_a_typed_error_not_wrong_pixels():
    # Pillow cannot identify 16-bit grey+alpha TIFFs
    for decode in (decode_image_full, decode_image):
        with pytest.raises(ImageDecodeError) as caught:
            decode(grey_alpha_tiff16())
        assert caught.value.error_type == "corrupt"


def test_a_16_bit_tiff_stored_plane_by_plane_is_read_exactly():
    # Pillow and OpenCV misread PlanarConfiguration 2 without an error; tifffile reads it
    d = decode_image_full(planar_rgb_tiff16())
    assert d.format.bits == 16 and d.pixels.dtype == np.uint16 and np.array_equal(d.pixels, rgb16())
    eight = decode_image(planar_rgb_tiff16()).astype(np.int64)
    assert np.abs(eight - rgb16() / 257).max() <= 0.5 + 1e-9  # the 8-bit decode is the same samples, rounded
    assert rgb16().std() > 1000  # samples that span the range: the comparisons can fail


def test_plain_8_bit_rgb_is_encoded_byte_for_byte_as_before():
    for fmt in ("jpeg", "png", "webp", "tiff"):
        assert encode_image_full(photo(), PixelFormat(), fmt, 85) == (encode_image(photo(), fmt, 85), ""), fmt


def test_pixel_format_travels_as_bytes_and_plain_rgb_has_none():
    data, rgba = rgba_png()
    fmt = decode_image_full(data).format
    back = PixelFormat.from_bytes(fmt.to_bytes())
    assert (back.mode, back.bits, back.grey, back.profile) == (fmt.mode, 8, False, "")
    assert np.array_equal(back.alpha, rgba[:, :, 3])
    jpeg = decode_image_full(save(Image.fromarray(photo()), "JPEG"))
    assert PixelFormat.from_bytes(b"").plain and jpeg.format.plain and jpeg.pixels.flags.writeable


def test_max_side_shrinks_alpha_with_the_pixels():
    data, _ = rgba_png()
    d = decode_image_full(data, max_side=32)
    assert d.pixels.shape == (24, 32, 3) and d.format.alpha.shape == (24, 32) and d.size == (H, W)
    pixels, fmt = resized(decode_image_full(png16(rgb16())), 32)
    assert pixels.shape == (24, 32, 3) and pixels.dtype == np.uint16


def test_the_stylizer_keeps_float_inputs_float():
    from jobs.common.run_settings import demo_checkpoint
    from stylize_core.checkpoint import load_style_model
    from stylize_core.stylizer import Stylizer, StylizerConfig

    stylizer = Stylizer({"demo": load_style_model(demo_checkpoint())}, None, StylizerConfig(device="cpu", metrics=False))
    assert network_input(rgb16(), object()).dtype == np.uint8  # stylizers without accepts_float: 8 bits
    x16 = network_input(rgb16(), stylizer)
    x8 = photo()
    mixed = stylizer.stylize([x16, x8], "demo")
    alone = stylizer.stylize([x8], "demo")[0].image
    assert mixed[0].image.dtype == np.float32 and mixed[1].image.dtype == np.uint8
    assert np.abs(mixed[1].image.astype(int) - alone).max() <= 1  # an 8-bit input in a float batch: as if alone
    out = mixed[0].image
    assert np.abs(out - out.round()).max() > 0.1  # not rounded to 8 bits
    assert np.abs(out - alone).mean() < 3 and np.abs(out - x16).mean() > 20  # styled, as the 8-bit input is


def test_style_prediction_and_adain_run_a_16_bit_input_in_float(tmp_path):
    from stylize_core.builder import StylizerSpec
    from stylize_core.registry import build_stylizer

    style = tmp_path / "style.png"
    style.write_bytes(encode_image_full(photo()[::-1], PixelFormat(), "png")[0])
    x16 = rgb16()
    for method, dtype in (("predict", np.float32), ("adain", np.float32)):
        spec = StylizerSpec(styles={}, style_images={"s": str(style)}, method=method, metrics=False, device="cpu")
        stylizer = build_stylizer(spec, lambda uri: open(uri, "rb").read()).stylizer
        x = network_input(x16, stylizer)
        assert x.dtype == dtype, method
        out = stylizer.stylize_many([x])["s"][0].image
        assert out.dtype == dtype and np.ptp(out) > 60, method  # styled, by the shipped demo models
        assert len(np.unique(out)) > 4 * len(np.unique(np.rint(out))), method  # between the 8-bit steps
    assert np.abs(out.astype(np.float32) - x16 / 257).mean() > 10


def test_masks_and_larger_outputs_keep_16_bits_and_alpha():
    x16 = rgb16()
    styled = np.full(x16.shape, 100.5, np.float32)
    weights = np.zeros((H, W), np.float32)
    weights[:, W // 2 :] = 1
    out = composite_any(x16, styled, weights)
    assert out.dtype == np.float32
    assert np.array_equal(out[:, : W // 2], network_input(x16)[:, : W // 2]) and (out[:, W // 2 :] == 100.5).all()
    assert composite_any(photo(), photo(), weights).dtype == np.uint8  # 8-bit stays the masks module's
    sr = composite_any(x16, np.full((2 * H, 2 * W, 3), 100.5, np.float32), weights)  # a x2 network's output
    assert sr.shape == (2 * H, 2 * W, 3) and sr.dtype == np.float32 and (sr[:, W + 1 :] == 100.5).all()
    lanczos = np.stack([np.asarray(Image.fromarray(network_input(x16)[:, :, c], "F").resize(
        (2 * W, 2 * H), Image.Resampling.LANCZOS)) for c in range(3)], axis=2)  # the input upscaled, in float
    assert np.abs(sr[:, : W - 1] - lanczos[:, : W - 1]).max() < 0.01
    with pytest.raises(MaskError, match="whole multiple"):
        composite_any(photo(), np.zeros((2 * H + 1, 2 * W, 3), np.uint8), weights)
    data, rgba = rgba_png()
    d = decode_image_full(data)
    big = np.asarray(Image.fromarray(d.pixels).resize((2 * W, 2 * H)))  # a super-resolution network's output
    out, state = encode_image_full(big, d.format, "png")
    alpha = np.asarray(_open(out))[:, :, 3]
    assert state == ALPHA_KEPT and alpha.shape == (2 * H, 2 * W)
    assert np.abs(alpha[::2, ::2].astype(int) - rgba[:, :, 3]).mean() < 8


def test_srgb_is_judged_by_curves_and_colorants_not_by_name():
    """A profile that calls itself sRGB but has a linear tone curve is converted; littlecms's own sRGB
    (whatever its description) is left alone."""
    impostor = linear_profile(name="sRGB IEC61966-2.1")
    assert not icc.is_srgb(icc.read_profile(impostor))
    assert icc.is_srgb(icc.srgb_profile())
    flat = np.full((4, 4, 3), 128, np.uint8)
    decoded = decode_image_full(save(Image.fromarray(flat), "PNG", icc_profile=impostor))
    assert decoded.format.profile == "sRGB IEC61966-2.1" and abs(float(decoded.pixels.mean()) - 188) <= 2


def test_a_tiff_output_is_written_whatever_the_exif_block_holds():
    from stylize_core.tiff_io import encode_tiff

    pixels = photo()
    for exif in (b"II*\x00garbage", b"MM\x00*\x00\x00\x00\x08\xff\xff", b"not tiff"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about the corrupt block it is asked to parse
            out = _open(encode_tiff(pixels, alpha=False, exif=exif))
        assert np.array_equal(np.asarray(out), pixels) and not out.getexif().get_ifd(0x8769)
