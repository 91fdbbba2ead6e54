"""``python -m jobs.catalog`` and the console script: run the program, exit with its status."""

from jobs.common import ray_runtime
from jobs.catalog.night import cli


def entry() -> None:
    ray_runtime.exit_process(cli())


if __name__ == "__main__":
    entry()
