"""What every benchmark prints beside its numbers: the CPU (model, count, the SIMD flags that matter
for convolutions), torch's version and threads, and the load average (the machine is often shared).

    from machine import print_machine   # benchmarks/ is on sys.path when a benchmark runs as a script
"""

from __future__ import annotations

import os
import subprocess

SIMD_PREFIXES = ("avx", "amx", "fma", "sse4")


def print_machine() -> None:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key in ("Model name", "CPU(s)", "Flags"):
            value = value.strip()
            if key == "Flags":
                value = " ".join(f for f in value.split() if f.startswith(SIMD_PREFIXES))
            print(f"{key}: {value}")
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
