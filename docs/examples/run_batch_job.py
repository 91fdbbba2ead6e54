"""Run the batch job (what `python -m jobs.stylize` runs) from Python, and read its summary and metrics.

    python docs/examples/run_batch_job.py [WORKDIR]   (default: ./example_run)

Writes three sample photographs to WORKDIR/photos and stylises them on a local Ray started for the
run, into WORKDIR/out. Takes about half a minute on a laptop's CPU, most of it Ray's start. The code
blocks of docs/python-api.md are lines of this file (tests/test_docs.py checks it).
"""

import os
import sys

import pyarrow.dataset as ds
import ray
import skimage.data
from PIL import Image

from jobs.batch import driver
from jobs.batch.settings import JobSettings
from jobs.common.outcome import JobError
from jobs.common.run_settings import demo_checkpoint

workdir = "example_run"
if len(sys.argv) > 1:
    workdir = sys.argv[1]
os.makedirs(f"{workdir}/photos", exist_ok=True)
for name in ("astronaut", "coffee", "chelsea"):
    Image.fromarray(getattr(skimage.data, name)()).save(f"{workdir}/photos/{name}.jpg")

settings = JobSettings(
    input=f"{workdir}/photos",  # a local folder, s3://bucket/prefix/, or a .parquet/.csv manifest
    output=f"{workdir}/out",
    styles={"mosaic": demo_checkpoint()},  # name -> checkpoint path or URI
    vgg_weights="random:0",  # demo loss network; "imagenet" needs torchvision's weights staged
    max_side=256,
    quiet=True,  # no progress bars
)
try:
    summary = driver.run(settings)  # starts a local Ray (or joins RAY_ADDRESS / settings.address)
except JobError as exc:  # the run could not start or finish: the message says why
    raise SystemExit(f"error: {exc}")
finally:
    ray.shutdown()
print(summary["counts"], summary["error_rate"], summary["passed"], summary["summary_uri"])

# One metrics row per input x style (docs/reference/metrics.md), the run id as a hive partition.
rows = ds.dataset(f"{workdir}/out/_metrics", partitioning="hive").to_table()
for row in rows.select(["run_id", "rel_path", "style", "status", "output_uri", "stylize_ms"]).to_pylist():
    print(row)
