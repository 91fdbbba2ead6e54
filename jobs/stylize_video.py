"""``python -m jobs.stylize_video``: the command users and cluster manifests call (code: :mod:`jobs.video`)."""

from jobs.video.__main__ import entry

if __name__ == "__main__":
    entry()
