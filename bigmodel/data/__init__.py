"""Datasets by name, all read the same way: a TFDS builder -> `tfds` data source -> grain.

Built-in offline datasets register themselves with TFDS; `image_folder` reads your
own images (see image_folder.py); text corpora and labelled texts are tokenised in
memory (see text.py); any other name is looked up in the TFDS catalog (`mnist`,
`fashion_mnist`, `cifar10`, `cifar100`, ...), which downloads on first use and so
needs a network.
"""
import dataclasses
import functools
import os

import jax
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from bigmodel.data import augment, fashion_mnist, image_folder, mlm, mnist1d, pipeline, sklearn_sets, text

# Offline datasets, built from installed packages.
OFFLINE = {"mnist1d": mnist1d.Mnist1d, "digits": sklearn_sets.Digits, "diabetes": sklearn_sets.Diabetes,
           "breast_cancer": sklearn_sets.BreastCancer, "fashion_mnist_local": fashion_mnist.FashionMnistLocal}

DEFAULTS = dict(
    name="mnist1d",
    batch_size=128,  # global, over all devices and hosts
    eval_batch_size=1000,
    train_split="train",
    eval_split="test",
    data_dir="",  # TFDS data_dir; "" = TFDS's default (~/tensorflow_datasets)
    cache=True,  # hold each split in memory as arrays (small datasets)
    on_device_mb=1024,  # a cached training split up to this size lives on the accelerator and batches are
                        # gathered inside the train step; 0 = feed each batch from the host (grain)
    num_threads=2,  # grain threads reading and preprocessing batches
    prefetch=8,  # batches grain keeps ready ahead of the train step
    augment=(),  # training-time augmentations, in order: random_crop, flip
    crop_padding=4,  # pixels of zero padding around an image before random_crop
    normalize=False,  # standardise inputs with the training split's mean and std per channel
    folder="",  # image_folder: <folder>/<split>/<class>/<images>
    image_size=0,  # image_folder: resize to image_size x image_size; 0 = keep (all must agree)
    channels=3,  # image_folder: 1 = grey, 3 = RGB
    tokenizer="char",  # text: byte | char | bpe (built from the training text), or a directory with a saved one
    vocab_size=1024,  # text: bpe vocabulary size
    seq_len=256,  # text: tokens per example (language models: context length)
    files=(),  # text_files: paths or one glob; text_csv: (train file, test file)
    text_key="text",  # text_csv: column of the text
    label_key="label",  # text_csv: column of the label
    val_fraction=0.1,  # text corpora: the end of each document held out for validation
    mlm_mask_rate=0.0,  # text corpora: > 0 turns next-token windows into masked-LM examples (BERT: 0.15)
)


@dataclasses.dataclass
class Dataset:
  name: str
  splits: dict  # split name -> source with len() and gather(indices) -> {"x", "y"}
  num_classes: int | None  # None for regression
  example_shape: tuple  # shape of one input x
  norm: tuple | None = None  # (mean, std) over all axes but the last, when data.normalize
  tokenizer: object = None  # text datasets: turns text into the model's input ids and back
  bytes_per_token: dict | None = None  # language-model corpora, per split: for bits per byte
  input_dtype: str = "float32"  # int32 for token ids
  mask: object = None  # masked-LM corpora: mask(batch, rng) -> masked batch
  label_names: tuple | None = None  # class names, where the dataset has them (ClassLabel names, text labels)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["arrays"], meta_fields=[])
@dataclasses.dataclass
class InMemory:
  """A split held as arrays: a batch is one fancy index per feature.

  A pytree: on the accelerator (see `on_device_mb`) the same `gather` runs inside the train step."""
  arrays: dict  # {"x": x_N..., "y": y_N...}, numpy or jax arrays

  def __len__(self):
    return len(self.arrays["y"])

  def gather(self, indices):
    return {k: v[indices] for k, v in self.arrays.items()}


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


def _builder(c):
  name = c.name
  kwargs = dict(data_dir=c.data_dir or None, file_format="array_record")
  if name == "image_folder":
    if not c.folder:
      raise ValueError("data.name='image_folder' needs data.folder=<dir holding train/<class>/ images>.")
    return image_folder.ImageFolder(folder=c.folder, image_size=c.image_size, channels=c.channels, **kwargs)
  if name in OFFLINE:
    return OFFLINE[name](**kwargs)
  try:
    return tfds.builder(name, **kwargs)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(
        f"Unknown dataset {name!r}. Built in (offline): {', '.join(sorted(OFFLINE))}; image_folder; "
        f"text: {', '.join(text.CORPORA + text.LABELLED)}; "
        "or any TFDS catalog name (needs a network on first use), e.g. mnist, "
        "fashion_mnist, cifar10.") from None


def load(c) -> Dataset:
  """Prepares dataset `c.name` (once per data_dir) and opens its train and eval splits."""
  augment.build(c.augment, c.crop_padding)  # unknown names fail before any work
  if c.name in (*text.CORPORA, *text.TFDS_CORPORA, *text.LABELLED):
    dataset = _load_text(c)
    for split in (c.train_split, c.eval_split):
      if split not in dataset.splits:
        raise ValueError(f"Dataset {c.name!r} has no split {split!r}. Splits: {', '.join(dataset.splits)}.")
    return dataset
  builder = _builder(c)
  try:
    builder.download_and_prepare()
  except Exception as e:  # TFDS raises many kinds; all mean "could not get the files"
    raise RuntimeError(
        f"Could not prepare TFDS dataset {c.name!r} in {builder.data_dir}: {e}\n"
        f"Catalog datasets download on first use and need a network; offline, use one of: "
        f"{', '.join(sorted(OFFLINE))}.") from e
  info = builder.info
  x_key, y_key = info.supervised_keys
  for split in (c.train_split, c.eval_split):
    if split not in info.splits:
      raise ValueError(f"Dataset {c.name!r} has no split {split!r}. Splits: {', '.join(info.splits)}.")
  splits = {}
  for split in dict.fromkeys((c.train_split, c.eval_split)):
    source = Streamed(builder.as_data_source(split), x_key, y_key)
    splits[split] = InMemory(_decoded(builder, split, source)) if c.cache else source
  label = info.features[y_key]
  return Dataset(name=c.name, splits=splits,
                 num_classes=getattr(label, "num_classes", None),
                 label_names=tuple(getattr(label, "names", None) or ()) or None,
                 example_shape=tuple(info.features[x_key].shape),
                 norm=_stats(splits[c.train_split]) if c.normalize else None)


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


def _stats(split, max_examples=10_000):
  """Mean and std over all axes but the last, from (up to) the first `max_examples`."""
  x = pipeline.preprocess(split.gather(np.arange(min(len(split), max_examples))))["x"]
  axes = tuple(range(x.ndim - 1))
  return x.mean(axes), x.std(axes) + 1e-6


def _load_text(c) -> Dataset:
  if c.name in text.LABELLED:
    arrays, classes, tok = text.load_labelled(c)
    return Dataset(name=c.name, splits={k: InMemory(v) for k, v in arrays.items()}, num_classes=len(classes),
                   example_shape=(c.seq_len,), label_names=tuple(map(str, classes)),
                   tokenizer=tok, input_dtype="int32")
  corpus = text.load_corpus(c)  # a language-model corpus: the "classes" are the vocabulary
  vocab = corpus.tokenizer.vocab_size
  mask = functools.partial(mlm.mask_batch, rate=c.mlm_mask_rate, vocab_size=vocab) if c.mlm_mask_rate else None
  return Dataset(name=c.name, splits=corpus.splits, num_classes=vocab + 1 if mask else vocab,
                 example_shape=(c.seq_len,), tokenizer=corpus.tokenizer,
                 bytes_per_token=corpus.bytes_per_token, input_dtype="int32", mask=mask)
