"""``python -m jobs.train`` and the console script: run the program, exit with its status."""

import sys

from jobs.train.program import cli


def entry() -> None:
    sys.exit(cli())


if __name__ == "__main__":
    entry()
