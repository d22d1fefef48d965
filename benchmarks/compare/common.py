"""What the Python reference jobs share: reading Fashion-MNIST's gzipped IDX files with numpy, the
command line, and the JSON lines the driver (compare.py) aggregates."""
import argparse
import gzip
import json
import os
import struct
import sys

import numpy as np


def read_idx(path):
    """An IDX file of unsigned bytes (gzipped or not) as a numpy array of its dimensions."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{stem}[.gz] not found in {directory} (apt-get install dataset-fashion-mnist)")


def load(directory, prefix, count=0):
    """Images as float32 (N, 28, 28, 1) in [0, 1] and labels as int64 (N,); the first `count` (0 = all)."""
    images = read_idx(find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(directory, f"{prefix}-labels-idx1-ubyte"))
    if count > 0:
        images, labels = images[:count], labels[:count]
    return (images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int64)


def parse_args(framework, variants=("default",)):
    """The command line every job shares; `variants` are the job's configurations, the first the default."""
    p = argparse.ArgumentParser(description=f"The reference job with {framework}")
    p.add_argument("--variant", choices=variants, default=variants[0], help="which configuration of the framework")
    p.add_argument("--data", default=os.environ.get("MIRROR_DATA_DIR") or "/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--run", type=int, default=0, help="run number, copied into the output")
    p.add_argument("--train-samples", type=int, default=0, help="train on the first N samples only (0 = all)")
    return p.parse_args()


def emit(**record):
    """One JSON line on stdout: what the driver reads."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
