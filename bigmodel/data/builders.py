"""Datasets read through a TFDS builder: the offline ones built from installed packages, and any
name in the TFDS catalog (`mnist`, `fashion_mnist`, `cifar10`, ...), which downloads on first use and
so needs a network. Each is prepared once per data_dir into ArrayRecord files and read with `tfds` data
sources (no TensorFlow needed).
"""
import importlib
import os

import numpy as np
from etils import epath

from bigmodel import errors
from bigmodel.data.dataset import Dataset, InMemory, held_in_memory, register

# Name -> (module in bigmodel.data, builder class). Imported when used: TFDS takes about 0.3 s to
# import, which runs that do not read a TFDS dataset (text corpora, generate, serve) need not pay.
OFFLINE = {"mnist1d": ("mnist1d", "Mnist1d"), "digits": ("sklearn_sets", "Digits"),
           "digits28": ("sklearn_sets", "Digits28"), "diabetes": ("sklearn_sets", "Diabetes"),
           "breast_cancer": ("sklearn_sets", "BreastCancer"), "fashion_mnist_local": ("fashion_mnist", "FashionMnistLocal")}


def builder_class(name):
  """The TFDS builder class of the offline dataset `name` (a key of OFFLINE)."""
  module, cls = OFFLINE[name]
  return getattr(importlib.import_module(f"bigmodel.data.{module}"), cls)


class Streamed:
  """A split read record by record from its TFDS files."""

  def __init__(self, source, x_key, y_key):
    self.source, self.x_key, self.y_key = source, x_key, y_key

  def __len__(self):
    return len(self.source)

  def gather(self, indices):
    records = self.source.__getitems__([int(i) for i in indices])
    return {"x": np.stack([r[self.x_key] for r in records]),
            "y": np.stack([r[self.y_key] for r in records])}


def _kwargs(c):
  return dict(data_dir=c.data_dir or None, file_format="array_record")


CATALOG_EXTRAS = "pip install -r requirements-catalog.txt  (tensorflow-cpu==2.21.0)"


def prepare(builder, c):
  """Downloads and prepares `builder`'s files once per data_dir (ArrayRecord, read without TensorFlow).
  Preparing a catalog image dataset encodes its images with TensorFlow: without it, say what to install."""
  try:
    builder.download_and_prepare()
  except Exception as e:  # TFDS raises many kinds; all mean "could not get the files"
    if any(isinstance(c, ModuleNotFoundError) and "tensorflow" in str(c) for c in errors.chain(e)):
      raise errors.UserError(
          f"Preparing TFDS dataset {c.name!r} encodes its examples with TensorFlow, which is not installed: "
          f"{CATALOG_EXTRAS}. Reading a prepared dataset needs no TensorFlow.") from e
    raise errors.UserError(
        f"Could not prepare TFDS dataset {c.name!r} in {builder.data_dir}: {e}\n"
        f"Catalog datasets download on first use and need a network; offline, use one of: "
        f"{', '.join(sorted(OFFLINE))}.") from e


def from_builder(builder, c) -> Dataset:
  """Prepares `builder` (once per data_dir) and opens the config's train and eval splits."""
  prepare(builder, c)
  info = builder.info
  x_key, y_key = info.supervised_keys
  for split in (c.train_split, c.eval_split):
    if split not in info.splits:
      raise errors.UserError(f"Dataset {c.name!r} has no split {split!r}. Splits: {', '.join(info.splits)}.")
  splits = {}
  for split in dict.fromkeys((c.train_split, c.eval_split)):
    source = Streamed(builder.as_data_source(split), x_key, y_key)
    held = held_in_memory(c, split, len(source), _example_nbytes(info.features[x_key]))
    splits[split] = InMemory(_decoded(builder, split, source)) if held else source
  label = info.features[y_key]
  num_classes = getattr(label, "num_classes", None)
  return Dataset(name=c.name, kind="labelled" if num_classes else "targets", splits=splits,
                 num_classes=num_classes, label_names=tuple(getattr(label, "names", None) or ()) or None,
                 example_shape=tuple(info.features[x_key].shape))


@register(*OFFLINE)
def load_offline(c) -> Dataset:
  return from_builder(builder_class(c.name)(**_kwargs(c)), c)


def catalog(c, known) -> Dataset:
  """A dataset of the TFDS catalog; an unknown name lists the `known` ones."""
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(c.name, **_kwargs(c))
  except tfds.core.registered.DatasetNotFoundError:
    raise errors.UserError(
        f"Unknown dataset {c.name!r}. Built in: {', '.join(sorted(known))}; "
        "or any TFDS catalog name (needs a network on first use), e.g. mnist, fashion_mnist, cifar10.") from None
  return from_builder(builder, c)


def _example_nbytes(feature):
  """Decoded bytes of one example's input; None when its shape varies (an image of any size)."""
  shape = tuple(feature.shape)
  if any(d is None for d in shape):
    return None
  return int(np.prod(shape)) * np.dtype(feature.np_dtype).itemsize


def _decoded(builder, split, source):
  """All of a split as arrays, decoded once and kept beside TFDS's files as .npz: decoding runs
  at ~0.1 ms a record (Fashion-MNIST's 70,000 took 5.6 s each run, the .npz loads in 0.1 s)."""
  path = epath.Path(builder.data_dir) / f"bigmodel-arrays-{split}.npz"
  if path.exists():
    with path.open("rb") as f, np.load(f) as arrays:
      return {k: arrays[k] for k in arrays.files}
  arrays = source.gather(np.arange(len(source)))
  try:  # written whole, then renamed: a killed run leaves no partial file
    tmp = path.parent / f"{path.name}.tmp{os.getpid()}"
    with tmp.open("wb") as f:
      np.savez(f, **arrays)
    tmp.rename(path)
  except OSError:  # a read-only data_dir: decode every run
    pass
  return arrays

