"""``python -m jobs.stylize``: the command users and cluster manifests call (code: :mod:`jobs.batch`)."""

from jobs.batch.__main__ import entry

if __name__ == "__main__":
    entry()
