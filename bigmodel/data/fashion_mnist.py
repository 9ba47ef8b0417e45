"""Fashion-MNIST (Xiao et al., 2017) offline, from Debian's `dataset-fashion-mnist` package.

The package installs the original gzipped IDX files; this builder turns them into a
TFDS dataset, so it reads like any other. (TFDS's own `fashion_mnist` downloads.)
"""
import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from bigmodel import errors
from bigmodel.data.array_builder import ArrayBuilder

DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle boot"]


def read_idx(path):
  """An IDX file (big-endian dims after a 4-byte magic whose last byte is the rank)."""
  with gzip.open(path, "rb") as f:
    raw = f.read()
  rank = raw[3]
  dims = np.frombuffer(raw, ">u4", count=rank, offset=4)
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * rank).reshape(dims)


class FashionMnistLocal(ArrayBuilder):
  """Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey images of 10 clothing classes."""

  def _features(self):
    return {"x": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            "y": tfds.features.ClassLabel(names=CLASSES)}

  def _arrays(self):
    files = {s: (f"{p}-images-idx3-ubyte.gz", f"{p}-labels-idx1-ubyte.gz") for s, p in
             (("train", "train"), ("test", "t10k"))}
    missing = [f for pair in files.values() for f in pair if not os.path.exists(os.path.join(DIR, f))]
    if missing:
      raise errors.NotFound(f"Fashion-MNIST files not found in {DIR}/ ({', '.join(missing)}). "
                            "Install them with: apt-get install -y dataset-fashion-mnist")
    return {s: (read_idx(os.path.join(DIR, x))[..., None], read_idx(os.path.join(DIR, y)))
            for s, (x, y) in files.items()}
