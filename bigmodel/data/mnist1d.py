"""MNIST-1D (Greydanus & Kobak, 2020), generated offline as a TFDS dataset.

`make_dataset(get_dataset_args())` rebuilds the paper's exact data (4,000 train /
1,000 test, length 40, 10 classes) in seconds; `get_dataset()` would download.
"""
import numpy as np
import tensorflow_datasets as tfds

from bigmodel.data.array_builder import ArrayBuilder


class Mnist1d(ArrayBuilder):
  """MNIST-1D: 1-D signals of length 40 drawn from the ten digit templates."""

  def _features(self):
    return {"x": tfds.features.Tensor(shape=(40,), dtype=np.float32),
            "y": tfds.features.ClassLabel(num_classes=10)}

  def _arrays(self):
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib: keep it lazy
    rng_state = np.random.get_state()  # make_dataset reseeds NumPy's global RNG
    try:
      d = make_dataset(get_dataset_args())
    finally:
      np.random.set_state(rng_state)
    return {"train": (d["x"].astype(np.float32), d["y"]),
            "test": (d["x_test"].astype(np.float32), d["y_test"])}
