"""``python -m jobs.image`` and the console script: run the program, exit with its status."""

import sys

from jobs.image.cli import cli


def entry() -> None:
    sys.exit(cli())


if __name__ == "__main__":
    entry()
