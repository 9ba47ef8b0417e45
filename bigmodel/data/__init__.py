"""Datasets by name: `load(c)` looks `c.name` up in the registry (dataset.py) and returns a `Dataset`.

Built in: TFDS builders for offline data and your image folders, and the TFDS catalog for any
other name (builders.py); text corpora and labelled texts, tokenised in memory (text.py). How
training batches reach the step is feed.py's; evaluation batches, pipeline.py's.
"""
import dataclasses

from bigmodel import errors, registry
from bigmodel.data import augment, builders, pipeline, subset, text
from bigmodel.data.dataset import DATASETS, Dataset, InMemory, register

DEFAULTS = dict(
    name="mnist1d",  # a dataset registered in bigmodel/data/ (data/dataset.py), else a TFDS catalog name
    batch_size=128,  # global, over all devices and hosts
    eval_batch_size=1000,  # global batch size of evaluation
    eval_examples=0,  # evaluate on the eval split's first N examples only (a quick look); 0 = all of it
    train_examples=0,  # a label budget: train on N examples of train_split, chosen with the run's seed and
                       # stratified by class (subset.py); 0 = all of them
    train_split="train",  # the split trained on
    eval_split="test",  # the split evaluated on every eval_every steps and at the end
    data_dir="",  # TFDS data_dir; "" = TFDS's default (~/tensorflow_datasets)
    cache=True,  # hold each split in memory as arrays (small datasets)
    on_device_mb=1024,  # a cached training split up to this size lives on the accelerator and batches are
                        # gathered inside the train step (feed.py); 0 = feed each batch from the host (grain)
    num_threads=2,  # grain threads reading and preprocessing batches
    prefetch=8,  # batches grain keeps ready ahead of the train step
    augment=(),  # training-time augmentations, in order: random_crop, flip
    crop_padding=4,  # pixels of zero padding around an image before random_crop
    normalize=False,  # standardise inputs with the training split's mean and std per channel
    folder="",  # image_folder: <folder>/<split>/<class>/<images>
    image_size=0,  # image_folder: resize to image_size x image_size; 0 = keep (all must agree)
    channels=3,  # image_folder: 1 = grey, 3 = RGB
    tokenizer="",  # text: byte | char | bpe (built from the training text), a directory with a saved one, a
                   # Hugging Face hub id or a .gguf file; "" = init.hf's checkpoint's tokenizer if it is set, else char
    vocab_size=1024,  # text: bpe vocabulary size
    seq_len=256,  # text: tokens per example (language models: context length)
    files=(),  # text_files: paths or one glob; text_csv: (train file, test file)
    text_key="text",  # text_csv: column of the text
    label_key="label",  # text_csv: column of the label
    val_fraction=0.1,  # text corpora: the end of each document held out for validation
    mlm_mask_rate=0.0,  # text corpora: > 0 turns next-token windows into masked-LM examples (BERT: 0.15)
)


at_least = registry.at_least
RANGES = dict(batch_size=at_least(1), eval_batch_size=at_least(1), eval_examples=at_least(0), train_examples=at_least(0),
              on_device_mb=at_least(0), num_threads=at_least(1),
              prefetch=at_least(1), crop_padding=at_least(0), image_size=at_least(0),
              channels=registry.Range(1, 1, also=(3,)), vocab_size=at_least(1), seq_len=at_least(1),
              val_fraction=registry.Range(0, 1, low_open=True, high_open=True), mlm_mask_rate=registry.FRACTION)


def load(c, seed=0) -> Dataset:
  """The dataset `c.name` with its train and eval splits open; the training split cut to
  `c.train_examples` (chosen with `seed`, the run's) and its statistics taken for `c.normalize`."""
  augment.build(c.augment, c.crop_padding)  # unknown names fail before any work
  loader = DATASETS.get(c.name) or (lambda c: builders.catalog(c, DATASETS))
  dataset = loader(c)
  for split in (c.train_split, c.eval_split):
    if split not in dataset.splits:
      raise errors.UserError(f"Dataset {c.name!r} has no split {split!r}. Splits: {', '.join(dataset.splits)}.")
  dataset = subset.of_training_split(dataset, c, seed)
  if c.normalize and dataset.input_dtype != "int32":  # token ids are not standardised
    dataset = dataclasses.replace(dataset, norm=pipeline.norm_stats(dataset.splits[c.train_split]))
  return dataset
