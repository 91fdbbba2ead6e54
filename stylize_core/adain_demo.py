"""The demo AdaIN model shipped as ``stylize_core/assets/demo_adain.pth``: nothing to download.

* Encoder: pytorch-AdaIN's ``vgg[:31]`` layout at a reduced width with fixed random filters from a
  seed (:func:`stylize_core.adain.random_encoder`); the checkpoint stores only its recipe
  (``"random:SEED"`` and the width), so the file holds the decoder alone.
* Decoder: pytorch-AdaIN's layout at the same width, trained with AdaIN's loss (Huang & Belongie
  2017, section 6): content = the output's relu4_1 against the AdaIN target ``t``; style = the
  per-channel mean/std of the output's relu1_1..relu4_1 against the style's. A second style term
  uses the texture loss network ``texture:1`` (another random filter bank; ``texture:0`` is kept for
  the evaluation) so colour and texture at the image's scale count as well.
* Data: scikit-image's photographs (:func:`~stylize_core.training_demo.demo_content_images`) and
  procedural style images (:func:`training_styles`); :func:`heldout_styles` are other generators and
  palettes, never seen in training, for the benchmark and the tests.

    python -m stylize_core.adain_demo --adain-demo OUT.pth [--steps N]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import adain
from .losses import feature_stats, stats_distance  # noqa: F401  (the demo's and benchmark's distance)

ENCODER_SEED = 0
WIDTH = 0.25
TRAIN_TEXTURE_SEED = 1  # the loss network the decoder trains against
EVAL_TEXTURE_SEED = 0  # the one the benchmark and the tests measure with (never trained against)

PALETTES = [  # training palettes first; the last two are for held-out styles only
    [(230, 57, 70), (252, 191, 73), (42, 157, 143), (38, 70, 83), (244, 162, 97)],
    [(20, 33, 61), (252, 163, 17), (229, 229, 229), (120, 0, 0)],
    [(0, 48, 73), (214, 40, 40), (247, 127, 0), (252, 191, 73), (234, 226, 183)],
    [(38, 70, 83), (233, 196, 106), (88, 129, 87), (163, 177, 138)],
    [(255, 190, 11), (251, 86, 7), (255, 0, 110), (131, 56, 236), (58, 134, 255)],
    [(34, 34, 59), (74, 78, 105), (154, 140, 152), (201, 173, 167), (242, 233, 228)],
    [(13, 59, 102), (250, 240, 202), (244, 211, 94), (238, 150, 75), (249, 87, 56)],  # held out
    [(6, 214, 160), (17, 138, 178), (7, 59, 76), (255, 209, 102), (239, 71, 111)],  # held out
]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy / size, xx / size


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) value noise in 0..1: a cells x cells random grid, bilinearly enlarged."""
    coarse = torch.from_numpy(rng.random((1, 1, cells, cells)).astype(np.float32))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy()


def _paint(index: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    colours = np.asarray(palette, dtype=np.float32)
    return colours[np.asarray(index) % len(colours)]


def stripes(seed: int, palette: int, size: int = 256) -> np.ndarray:
    """Bands of the palette at a random angle and period, with wavy edges."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    angle, period = rng.uniform(0, np.pi), rng.uniform(0.04, 0.12)
    u = np.cos(angle) * xx + np.sin(angle) * yy + 0.03 * np.sin(2 * np.pi * (yy * rng.uniform(1, 4)))
    return _paint((u / period).astype(np.int64), PALETTES[palette])


def dots(seed: int, palette: int, size: int = 256) -> np.ndarray:
    """Polka dots of several colours on the palette's first colour."""
    rng = np.random.default_rng(seed)
    colours = np.asarray(PALETTES[palette], dtype=np.float32)
    image = np.broadcast_to(colours[0], (size, size, 3)).copy()
    yy, xx = _grid(size)
    for _ in range(int(rng.integers(40, 120))):
        cy, cx, r = rng.random(), rng.random(), rng.uniform(0.015, 0.05)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colours[rng.integers(1, len(colours))]
    return image


def brush(seed: int, palette: int, size: int = 256) -> np.ndarray:
    """Brush-stroke-like texture: value noise stretched along one direction, quantised to the palette,
    with a fine streak modulation."""
    rng = np.random.default_rng(seed)
    stretched = _smooth_noise(rng, size, 24)
    if rng.random() < 0.5:
        stretched = _smooth_noise(rng, size, 6)[:, :1].repeat(size, 1) * 0.3 + stretched * 0.7
    streak = _smooth_noise(rng, size, 64)
    idx = (stretched * len(PALETTES[palette]) * 1.5).astype(np.int64)
    image = _paint(idx, PALETTES[palette]) * (0.75 + 0.4 * streak[..., None])
    return image


def fields(seed: int, palette: int, size: int = 256) -> np.ndarray:
    """Soft colour fields: the palette blended by smooth noise, plus grain."""
    rng = np.random.default_rng(seed)
    colours = np.asarray(PALETTES[palette], dtype=np.float32)
    weights = np.stack([_smooth_noise(rng, size, 5) ** 3 for _ in colours], -1)  # (S, S, K)
    image = (weights / weights.sum(-1, keepdims=True)) @ colours
    return image + rng.normal(0, 8, (size, size, 1))


def mosaic(seed: int, palette: int, size: int = 256) -> np.ndarray:
    """The training demo's Voronoi mosaic, recoloured with ``palette``."""
    from .training_demo import mosaic_style_image

    base = mosaic_style_image(size, cells=int(np.random.default_rng(seed).integers(40, 140)), seed=seed)
    grey = base.astype(np.float32).mean(-1)
    idx = (np.floor(grey / 256 * 997).astype(np.int64) * 7919) // 13
    image = _paint(idx, PALETTES[palette]) * (base.max(-1, keepdims=True) / 255.0 * 0.5 + 0.5)
    image[grey < 40] = (30, 24, 20)  # keep the grout
    return image


def plaid(seed: int, palette: int, size: int = 256) -> np.ndarray:
    """Held out: crossed translucent bands (tartan-like)."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    colours = np.asarray(PALETTES[palette], dtype=np.float32)
    a = colours[(xx / rng.uniform(0.05, 0.1)).astype(np.int64) % len(colours)]
    b = colours[(yy / rng.uniform(0.05, 0.1)).astype(np.int64) % len(colours)]
    weave = ((np.arange(size)[:, None] + np.arange(size)[None, :]) % 4 < 2)[..., None]
    return np.where(weave, a, b)


def rings(seed: int, palette: int, size: int = 256) -> np.ndarray:
    """Held out: concentric wavy rings around a few centres (wood-grain / ripple-like)."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    r = np.min([np.hypot(yy - rng.random(), xx - rng.random()) for _ in range(3)], axis=0)
    phase = r * rng.uniform(20, 40) + 2 * _smooth_noise(rng, size, 8)
    return _paint(phase.astype(np.int64), PALETTES[palette]) * (0.85 + 0.15 * np.cos(phase * 2 * np.pi))[..., None]


def crackle(seed: int, palette: int, size: int = 256) -> np.ndarray:
    """Held out: cracked paint, Voronoi cells shaded by noise with bright cracks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    points = rng.uniform(0, size, (60, 2))
    dist = np.sort(np.hypot(yy[..., None] - points[:, 0], xx[..., None] - points[:, 1]), axis=-1)[..., :2]
    colours = np.asarray(PALETTES[palette], dtype=np.float32)
    image = colours[1] * (0.6 + 0.6 * _smooth_noise(rng, size, 12))[..., None]
    image[(dist[..., 1] - dist[..., 0]) < 2.0] = colours[-1]
    return image


def _gravel() -> np.ndarray:
    import skimage.data

    grey = skimage.data.gravel()[:256, :256].astype(np.float32)
    return np.stack([grey * 1.0, grey * 0.85, grey * 0.6], -1)  # a warm-tinted stone texture


TRAIN_GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "stripes": stripes, "dots": dots, "brush": brush, "fields": fields, "mosaic": mosaic}


def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(image, dtype=np.float32), 0, 255).round().astype(np.uint8)


def training_styles(per_generator: int = 6) -> dict[str, np.ndarray]:
    """Procedural style images for training: 5 generators x ``per_generator`` (seed, palette 0..5)."""
    out = {}
    for g, (name, make) in enumerate(TRAIN_GENERATORS.items()):
        for i in range(per_generator):
            out[f"{name}{i}"] = _u8(make(seed=100 * g + i, palette=(i + g) % 6))
    return out


def heldout_styles() -> dict[str, np.ndarray]:
    """Style images never seen in training: other generators, held-out palettes and seeds, and
    scikit-image's gravel photograph (tinted)."""
    return {
        "plaid": _u8(plaid(seed=901, palette=6)),
        "rings": _u8(rings(seed=902, palette=7)),
        "crackle": _u8(crackle(seed=903, palette=6)),
        "stripes_heldout": _u8(stripes(seed=904, palette=7)),
        "gravel": _u8(_gravel()),
    }


# --- the statistics the goal is measured with -----------------------------------------------------
# feature_stats and stats_distance are the metrics' (stylize_core.losses), imported above.

def texture_levels(seed: int = EVAL_TEXTURE_SEED) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """The texture loss network's relu1_1..relu4_1 equivalents: its colour layer and both banks on
    each of its 4 octaves (full, 1/2, 1/4, 1/8 scale, as VGG's relu1_1..relu4_1), 0..1 images in."""
    from .texture_net import TextureFeatures, texture_layer_names

    net = TextureFeatures(seed)
    names = texture_layer_names()
    return lambda x: [f for f in net(x * 255, names).values()]  # (B, C, h, w) per layer


def encoder_levels(enc: nn.Sequential) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """The encoder's relu1_1, relu2_1, relu3_1, relu4_1 features of 0..1 images."""
    stages = adain.encoder_stages(enc)

    def levels(x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in stages:
            x = stage(x)
            out.append(x)
        return out

    return levels


@torch.no_grad()
def distance_ratio(stylizer: adain.AdaINStylizer, content: np.ndarray, style: str, style_image: np.ndarray,
                   levels: Callable[[torch.Tensor], list[torch.Tensor]]) -> float:
    """d(stats(output), stats(style)) / d(stats(content), stats(style)) for one content image:
    1 = as far from the style as the input, 0 = the style's statistics."""
    return output_ratio(content, stylizer.stylize([content], style)[0].image, style_image, levels)


@torch.no_grad()
def output_ratio(content: np.ndarray, output: np.ndarray, style_image: np.ndarray,
                 levels: Callable[[torch.Tensor], list[torch.Tensor]]) -> float:
    """:func:`distance_ratio` of an output already made, (H, W, 3) uint8 each."""
    s, c, o = (feature_stats(levels(adain.to_unit(x, torch.device("cpu")))) for x in (style_image, content, output))
    return float(stats_distance(o, s)[0] / stats_distance(c, s)[0])


# --- training ---------------------------------------------------------------------------------------

def _crops(images: Sequence[np.ndarray], n: int, side: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` random ``side`` crops (after a random downscale by up to 2x), (n, 3, side, side) 0..1."""
    out = []
    for i in rng.integers(0, len(images), n):
        img = torch.from_numpy(np.ascontiguousarray(images[i])).permute(2, 0, 1)[None].float() / 255
        short = min(img.shape[-2:])
        scale = rng.uniform(max(side / short, 0.25), max(side / short, 0.5)) if short > 2 * side else side / short
        img = F.interpolate(img, scale_factor=max(scale, side / short), mode="bilinear", antialias=True,
                            align_corners=False).clamp(0, 1)
        y, x = (int(rng.integers(0, d - side + 1)) for d in img.shape[-2:])
        out.append(img[..., y:y + side, x:x + side])
    return torch.cat(out)


def _stats_loss(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    loss = 0
    for fa, fb in zip(a, b, strict=True):
        ma, sa = adain.calc_mean_std(fa)
        mb, sb = adain.calc_mean_std(fb)
        loss = loss + F.mse_loss(ma, mb) + F.mse_loss(sa, sb)
    return loss  # type: ignore[return-value]


def train_decoder(steps: int, *, side: int = 64, batch: int = 4, lr: float = 1e-3, style_weight: float = 10.0,
                  texture_weight: float = 10.0, edge_weight: float = 0.0, colour_weight: float = 0.0, seed: int = 0,
                  log_every: int = 50, time_limit: float | None = None, init: nn.Module | None = None
                  ) -> tuple[nn.Sequential, nn.Sequential, dict]:
    """The decoder trained against :func:`random_encoder` (seed :data:`ENCODER_SEED`, width :data:`WIDTH`);
    returns (encoder, decoder, recipe). Stops early at ``time_limit`` seconds (the recipe says where).
    ``init``: a decoder to continue from (a run cut short by its time limit). ``edge_weight``: a second
    content term, the texture network's luminance-edge layers (o0y3, o1y3) of the output against the
    content photo's, which keeps the photo's edges that random relu4_1 features alone lose.
    ``colour_weight``: a style term on the pixels themselves, the per-channel mean and std of the
    output's RGB against the style image's (0..1 units): the random encoder's 16 relu1_1 channels pin
    the style's palette only loosely."""
    from .training_demo import demo_content_images

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = adain.random_encoder(ENCODER_SEED, WIDTH)
    dec = adain.decoder(WIDTH)
    if init is not None:
        dec.load_state_dict({k: v.float() for k, v in init.state_dict().items()})
    enc_levels = encoder_levels(enc)
    tex = texture_levels(TRAIN_TEXTURE_SEED)
    from .texture_net import CONTENT_LAYERS, TextureFeatures

    edges = TextureFeatures(TRAIN_TEXTURE_SEED, CONTENT_LAYERS)
    contents, styles = demo_content_images(), list(training_styles().values())
    opt = torch.optim.Adam(dec.parameters(), lr=lr)
    start, done = time.perf_counter(), 0
    for step in range(steps):
        for group in opt.param_groups:  # pytorch-AdaIN's inverse decay, scaled to this run's length
            group["lr"] = lr / (1.0 + 5.0 * step / max(steps, 1))
        c, s = _crops(contents, batch, side, rng), _crops(styles, batch, side, rng)
        with torch.no_grad():
            s_feats, s_tex = enc_levels(s), tex(s)
            c_feat = enc(c)
            c_edges = edges(c * 255) if edge_weight else {}
            t = adain.adaptive_instance_normalization(c_feat, *adain.calc_mean_std(s_feats[-1]))
        out = dec(t)
        o_feats = enc_levels(out)
        content_loss = F.mse_loss(o_feats[-1], t)
        style_loss = _stats_loss(o_feats, s_feats)
        texture_loss = _stats_loss(tex(out), s_tex)
        colour_loss = _stats_loss([out], [s])
        loss = content_loss + style_weight * style_loss + texture_weight * texture_loss + colour_weight * colour_loss
        if edge_weight:
            o_edges = edges(out * 255)
            loss = loss + edge_weight * sum(F.mse_loss(o_edges[k], c_edges[k]) for k in CONTENT_LAYERS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if log_every and (done % log_every == 0 or done == 1):
            print(f"step {done}/{steps} content {content_loss.item():.4f} style {style_loss.item():.4f} "
                  f"texture {texture_loss.item():.4f} colour {colour_loss.item():.4f} {time.perf_counter() - start:.0f} s", flush=True)
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
    recipe = {"steps": done, "side": side, "batch": batch, "lr": lr, "style_weight": style_weight,
              "texture_weight": texture_weight, "edge_weight": edge_weight, "colour_weight": colour_weight,
              "texture_loss_network": f"texture:{TRAIN_TEXTURE_SEED}",
              "seed": seed, "train_seconds": round(time.perf_counter() - start, 1)}
    return enc, dec.eval(), recipe


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import json
    from pathlib import Path

    from .adain_checkpoint import adain_checkpoint_bytes

    p = argparse.ArgumentParser(description="Train the demo AdaIN decoder on scikit-image photos.")
    p.add_argument("--adain-demo", required=True, metavar="OUT.pth", help="where to write the one-file checkpoint")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--edge-weight", type=float, default=0.0, help="weight of the luminance-edge content term")
    p.add_argument("--style-weight", type=float, default=10.0, help="weight of the encoder's mean/std style term")
    p.add_argument("--texture-weight", type=float, default=10.0, help="weight of the texture network's mean/std term")
    p.add_argument("--colour-weight", type=float, default=0.0,
                   help="weight of the pixels' own mean/std term against the style image's")
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="data order (use another when continuing with --init)")
    p.add_argument("--init", default=None, metavar="CKPT", help="continue from this demo checkpoint's decoder")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    init, before = None, []
    if args.init:
        from .adain_checkpoint import load_adain

        loaded = load_adain(None, args.init, lambda uri: Path(uri).read_bytes())
        init, before = loaded.decoder, [json.loads(loaded.metadata["training"])]
        before = before[0].get("continued", []) + [{k: v for k, v in before[0].items() if k != "continued"}]
    enc, dec, recipe = train_decoder(args.steps, side=args.image_size, batch=args.batch_size, lr=args.lr,
                                     time_limit=args.time_limit, init=init, seed=args.seed,
                                     edge_weight=args.edge_weight, style_weight=args.style_weight,
                                     texture_weight=args.texture_weight, colour_weight=args.colour_weight)
    if before:
        recipe["continued"] = before  # the earlier runs this one continued, oldest first
    data = adain_checkpoint_bytes(None, dec.half(), {"demo": 1, "training": json.dumps(recipe)},
                                  encoder_recipe=f"random:{ENCODER_SEED}", width=WIDTH)
    Path(args.adain_demo).write_bytes(data)
    print(f"trained {recipe['steps']} steps in {recipe['train_seconds']} s -> {args.adain_demo} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
