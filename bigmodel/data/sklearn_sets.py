"""scikit-learn's bundled datasets as TFDS datasets: small, offline, for tests and demos.

Each is split 80/20 into train/test with a fixed permutation.
"""
import jax
import numpy as np
import tensorflow_datasets as tfds

from bigmodel.data.array_builder import ArrayBuilder


def _split(x, y, seed=0, test_fraction=0.2):
  order = np.random.default_rng(seed).permutation(len(x))
  n_test = int(len(x) * test_fraction)
  test, train = order[:n_test], order[n_test:]
  return {"train": (x[train], y[train]), "test": (x[test], y[test])}


class Digits(ArrayBuilder):
  """UCI handwritten digits: 1,797 8x8 grey images (0..1), 10 classes."""

  def _features(self):
    return {"x": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.float32),
            "y": tfds.features.ClassLabel(num_classes=10)}

  def _arrays(self):
    from sklearn.datasets import load_digits
    d = load_digits()
    return _split((d.images / 16.0).astype(np.float32)[..., None], d.target)


class Digits28(ArrayBuilder):
  """The same digits (same split) stored as Fashion-MNIST stores its images: 28x28x1 uint8, ink bright on
  black, bilinearly upsampled from 8x8. A model pretrained on Fashion-MNIST loads by name and reads
  digits at the shape and scale it was trained on (experiments/transfer/)."""

  def _features(self):
    return {"x": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            "y": tfds.features.ClassLabel(num_classes=10)}

  def _arrays(self):
    from sklearn.datasets import load_digits
    d = load_digits()
    images_Nx28x28 = jax.image.resize(d.images / 16.0, (len(d.images), 28, 28), "linear")
    pixels = np.round(np.clip(np.asarray(images_Nx28x28), 0, 1) * 255).astype(np.uint8)
    return _split(pixels[..., None], d.target)


class Diabetes(ArrayBuilder):
  """Diabetes regression: 442 patients, 10 scaled features, target standardised
  (disease progression minus its mean 152.1, over its std 77.0)."""

  def _features(self):
    return {"x": tfds.features.Tensor(shape=(10,), dtype=np.float32),
            "y": tfds.features.Tensor(shape=(), dtype=np.float32)}

  def _arrays(self):
    from sklearn.datasets import load_diabetes
    x, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()
    return _split(x.astype(np.float32), y.astype(np.float32))


class BreastCancer(ArrayBuilder):
  """Wisconsin breast cancer: 569 tumours, 30 features (standardised), malignant (0) or benign (1)."""

  def _features(self):
    return {"x": tfds.features.Tensor(shape=(30,), dtype=np.float32),
            "y": tfds.features.ClassLabel(names=["malignant", "benign"])}

  def _arrays(self):
    from sklearn.datasets import load_breast_cancer
    x, y = load_breast_cancer(return_X_y=True)
    return _split(((x - x.mean(0)) / x.std(0)).astype(np.float32), y)
