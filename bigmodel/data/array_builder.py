"""A TFDS builder for data made in memory (generated or bundled with a package).

Subclasses give `_features()` and `_arrays()`; TFDS writes ArrayRecord files once
into its data_dir, and from then on the dataset reads like any other TFDS one
(`tfds.data_source`, no TensorFlow needed). Examples are dicts `{"x": ..., "y": ...}`.
"""
import numpy as np
import tensorflow_datasets as tfds


class ArrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  VERSION = tfds.core.Version("1.0.0")

  def _features(self) -> dict:
    raise NotImplementedError

  def _arrays(self) -> dict:
    """{split: (x_N..., y_N...)}."""
    raise NotImplementedError

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict(self._features()), supervised_keys=("x", "y"))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(x, y) for split, (x, y) in self._arrays().items()}

  def _generate_examples(self, x, y):
    for i in range(len(x)):
      yield i, {"x": np.asarray(x[i]), "y": y[i]}
