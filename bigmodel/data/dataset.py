"""What every dataset loader returns, and the registry of loaders by name.

A loader takes the config's `data` block and returns a `Dataset`. Every dataset module registers its
loaders beside its reader with this one decorator (several names may share a loader); a new dataset
needs one function:

  @data.register("my_data")
  def load_my_data(c) -> data.Dataset: ...

A split has len() and gather(indices) -> {"x": ..., "y": ...} (and, for packed rows, "segments": `model_inputs`).
One that sets `on_device = True` is a pytree
of arrays the train step can gather from, so a small one is placed on the accelerator (feed.py); any other
split (records read from files, memory-mapped shards) is read on the host.
"""
import dataclasses
import functools
import sys

import jax

from bigmodel import errors

KINDS = ("labelled", "targets", "corpus")  # classes to predict, values to regress, token windows for an LM
DATASETS = {}  # name -> loader(c) -> Dataset


def register(*names):
  """Registers `loader(c) -> Dataset` under each `data.name` in `names`."""
  def wrap(loader):
    DATASETS.update(dict.fromkeys(names, loader))
    return loader
  return wrap


def model_inputs(batch):
  """What a batch gives the model besides its `x`: a packed batch's `segments` (conversations.py, data.pack),
  which keep each row's conversations apart (models/llama.py)."""
  return {"segments_BxL": batch["segments"]} if "segments" in batch else {}


@dataclasses.dataclass
class Dataset:
  name: str
  kind: str  # one of KINDS: which tasks it can serve
  splits: dict  # split name -> source with len() and gather(indices) -> {"x", "y"}
  num_classes: int | None  # labelled: the classes; corpus: the tokenizer's vocabulary; targets: None
  example_shape: tuple  # shape of one input x
  norm: tuple | None = None  # (mean, std) over all axes but the last, when data.normalize
  tokenizer: object = None  # text datasets: turns text into the model's input ids and back
  bytes_per_token: dict | None = None  # corpora, per split: for bits per byte
  input_dtype: str = "float32"  # int32 for token ids
  mask: object = None  # masked-LM corpora: mask(batch, rng) -> masked batch (masked ids are vocab_size)
  label_names: tuple | None = None  # class names, where the dataset has them (ClassLabel names, text labels)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise errors.UserError(f"Dataset {self.name!r} has kind {self.kind!r}; a dataset is one of {', '.join(KINDS)}.")


@functools.partial(jax.tree_util.register_dataclass, data_fields=["arrays"], meta_fields=[])
@dataclasses.dataclass
class InMemory:
  """A split held as arrays: a batch is one fancy index per feature.

  A pytree: on the accelerator (see feed.py) the same `gather` runs inside the train step."""
  arrays: dict  # {"x": x_N..., "y": y_N...}, numpy or jax arrays
  on_device = True  # a class attribute, not a field

  def __len__(self):
    return len(self.arrays["y"])

  def gather(self, indices):
    return {k: v[indices] for k, v in self.arrays.items()}


CACHE_CHOICES = ("auto", True, False)


def cache_setting(value):
  """data.cache as one of CACHE_CHOICES (the command line gives strings: "True", "false", "auto")."""
  if isinstance(value, str) and value.lower() in ("true", "false", "auto"):
    value = {"true": True, "false": False, "auto": "auto"}[value.lower()]
  if value not in CACHE_CHOICES or not isinstance(value, (bool, str)):
    raise errors.UserError(f"data.cache={value!r}: use 'auto' (hold a split in memory when it fits data.memory_mb), "
                           "True (always) or False (always read by index from the files).")
  return value


def held_in_memory(c, split, n, example_nbytes):
  """Whether split `split` (n examples of `example_nbytes` decoded bytes each, None if unknown) is held in
  memory: data.cache True or False as given; 'auto' when its decoded size fits data.memory_mb. Says which."""
  setting = cache_setting(c.cache)
  size = None if example_nbytes is None else n * example_nbytes
  held = setting if setting != "auto" else size is not None and size <= c.memory_mb * 2**20
  if jax.process_index() == 0:
    decoded = f"{size / 1e9:,.2f} GB decoded" if size is not None else "decoded size unknown"
    why = (f"data.cache={setting}" if setting != "auto" else
           f"{'within' if held else 'over'} data.memory_mb={c.memory_mb:,}")
    print(f"{'holding' if held else 'streaming'} {split} split{' in memory' if held else ''}: {n:,} examples, "
          f"{decoded} ({why})", file=sys.stderr)
  return held
