"""``python -m jobs.stylize_image``: the command users and cluster manifests call (code: :mod:`jobs.image`)."""

from jobs.image.__main__ import entry

if __name__ == "__main__":
    entry()
