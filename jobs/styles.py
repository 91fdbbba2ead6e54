"""List the styles of a style checkpoint: ``python -m jobs.styles CHECKPOINT``.

Prints one line per style, ``index<TAB>name``: a multi-style network (trained with several
``--style-image``) lists each style it holds; a single-style checkpoint lists its one style (index 0;
a bare pytorch/examples state dict has no name). A checkpoint that cannot be read exits 2 with one
line saying why. CHECKPOINT is a local path or any URI the jobs read (s3://...).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.styles", description="List the styles of a style checkpoint.")
    p.add_argument("checkpoint", help="style checkpoint: local path or URI (s3://bucket/models/styles.pth)")
    return p


def style_lines(checkpoint: str) -> list[str]:
    """``index<TAB>name`` per style; raises StyleModelError with the reason when unreadable."""
    from stylize_core.checkpoint import load_style_model

    from jobs.common.storage import read_bytes, split_protocol

    opener = None
    protocol, path = split_protocol(checkpoint)
    if protocol in ("file", "local"):
        checkpoint = path
    elif protocol is not None:
        def opener(uri: str) -> bytes:
            return read_bytes(uri)  # load_style_model says why it cannot be read

    model = load_style_model(checkpoint, opener=opener)
    return [f"{i}\t{name}" for i, name in enumerate(model.style_names)]


def main(argv: Sequence[str] | None = None) -> int:
    from stylize_core.checkpoint import StyleModelError

    args = build_parser().parse_args(argv)
    try:
        lines = style_lines(args.checkpoint)
    except (StyleModelError, OSError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
