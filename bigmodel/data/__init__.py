"""Datasets by name: `load(c)` looks `c.name` up in the registry (dataset.py) and returns a `Dataset`.

Built in: TFDS builders for offline data, and the TFDS catalog for any other name (builders.py); your
image folders, prepared into uint8 shards by worker processes (image_folder.py); text corpora and
labelled texts, tokenised in memory (text.py); corpora tokenized once into shards by
`python -m bigmodel.prepare` and read through memory maps (tokens.py). How training batches reach the
step is feed.py's; evaluation batches, pipeline.py's.

The `data` keys: those every dataset reads are declared here; a family's own keys beside its reader
(image_folder.KEYS, text.KEYS, tokens.KEYS, conversations.KEYS), under the same flat names (data.seq_len,
data.path).
"""
import dataclasses

from bigmodel import errors, registry
# Importing the dataset modules registers their loaders.
from bigmodel.data import (augment, builders, conversations, fine_foods, image_folder, pipeline,  # noqa: F401
                           shakespeare, subset, text, tokens)
from bigmodel.data.dataset import DATASETS, Dataset, InMemory, cache_setting, model_inputs, register
from bigmodel.registry import Key, at_least

KEYS = dict(
    name=Key("mnist1d", "a dataset registered in bigmodel/data/ (data/dataset.py), else a TFDS catalog name"),
    batch_size=Key(128, "global, over all devices and hosts", at_least(1)),
    eval_batch_size=Key(1000, "global batch size of evaluation", at_least(1)),
    eval_examples=Key(-1, "evaluate on the eval split's first N examples only (a quick look); 0 = all of it; -1 = "
                          "all of it, but of a corpus's split over 8,192 windows a fixed, evenly spread 8,192",
                      at_least(-1)),
    train_examples=Key(0, "a label budget: train on N examples of train_split, chosen with the run's seed and "
                          "stratified by class (subset.py); 0 = all of them", at_least(0)),
    train_split=Key("train", "the split trained on"),
    eval_split=Key("test", "the split evaluated on every eval_every steps and at the end"),
    data_dir=Key("", "TFDS data_dir; empty = TFDS's default (~/tensorflow_datasets)"),
    cache=Key("auto", "hold each split in memory as arrays: 'auto' = when its decoded arrays fit data.memory_mb, "
                      "else read by index from the prepared files (streamed); True = always; False = never"),
    memory_mb=Key(256, "data.cache='auto': the largest decoded split (MB) held in memory (and a copy on the "
                       "device): MNIST and CIFAR-10 are held, a folder of over ~1,700 images at 224 px is streamed",
                  at_least(0)),
    on_device_mb=Key(1024, "a cached training split up to this size lives on the accelerator and batches are "
                           "gathered inside the train step (feed.py); 0 = feed each batch from the host (grain)",
                      at_least(0)),
    num_threads=Key(2, "grain threads reading and preprocessing batches", at_least(1)),
    workers=Key(-1, "processes decoding images: preparing an image folder, and reading, augmenting and normalising "
                    "training batches of a split read from files (grain); -1 = one per core; 0 = none (grain's "
                    "threads in the training process)", at_least(-1)),
    prefetch=Key(8, "batches grain keeps ready ahead of the train step", at_least(1)),
    augment=Key((), "training-time augmentations, in order: random_crop, flip"),
    crop_padding=Key(4, "pixels of zero padding around an image before random_crop", at_least(0)),
    normalize=Key(False, "standardise inputs with the training split's mean and std per channel"),
    **image_folder.KEYS,  # data.name=image_folder's own keys
    **text.KEYS,  # text datasets': the tokenizer, context, files and splits
    **tokens.KEYS,  # prepared token shards'
    **conversations.KEYS,  # chat conversations'
)
DEFAULTS = registry.defaults(KEYS)


def load(c, seed=0) -> Dataset:
  """The dataset `c.name` with its train and eval splits open; the training split cut to
  `c.train_examples` (chosen with `seed`, the run's) and its statistics taken for `c.normalize` (unless the
  dataset brought its own for the whole split: a prepared image folder counts them as it writes)."""
  augment.build(c.augment, c.crop_padding)  # unknown names fail before any work
  cache_setting(c.cache)
  loader = DATASETS.get(c.name) or (lambda c: builders.catalog(c, DATASETS))
  dataset = loader(c)
  for split in (c.train_split, c.eval_split):
    if split not in dataset.splits:
      raise errors.UserError(f"Dataset {c.name!r} has no split {split!r}. Splits: {', '.join(dataset.splits)}.")
  dataset = subset.of_training_split(dataset, c, seed)
  if c.normalize and dataset.norm is None and dataset.input_dtype != "int32":  # token ids are not standardised
    dataset = dataclasses.replace(dataset, norm=pipeline.norm_stats(dataset.splits[c.train_split]))
  return dataset
