"""Batches from a split with grain: deterministic given the seed, resumable, prefetched.

The training stream is a grain MapDataset whose element b is the b-th batch of
example *indices* (a fresh permutation each epoch), gathered, augmented (seeded by
the batch index), scaled and normalised on grain's threads, or, for a split read from
files, in `data.workers` processes (grain's mp_prefetch: the same batches, in the same order).
Its iterator state (how many batches were drawn) goes into every checkpoint.
Each host gathers only its own slice of every global batch.
"""
import functools
import os
import sys

import jax
import numpy as np

from bigmodel import errors
from bigmodel.data import augment


def preprocess(batch):
  """uint8 images scaled to [0, 1] as float32; other floats as float32; token ids as int32."""
  x = batch["x"]
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  elif np.issubdtype(x.dtype, np.integer):
    x = x.astype(np.int32)
  else:
    x = x.astype(np.float32)
  return {**batch, "x": x}


def normalize(batch, norm):
  """Standardises inputs with `norm` = (mean, std) of the training split, if given."""
  if norm is None:
    return batch
  mean, std = norm
  return {**batch, "x": (batch["x"] - mean) / std}


def norm_stats(split, max_examples=10_000, chunk=64):
  """(mean, std) over all axes but the last, of the split's preprocessed inputs: all of them, or
  `max_examples` spread evenly over it (a prepared image folder is in class order: its first 10,000 of
  ImageNet's 1.28 M images are 8 classes), so the time they take stops growing with the split. Read `chunk`
  at a time (10,000 images of 224 x 224 x 3 would be 6 GB as float32). uint8 images are counted in a
  histogram per channel (exact, and no float copy); other inputs summed in float64."""
  n = min(len(split), max_examples)
  indices = np.arange(n) if n == len(split) else np.linspace(0, len(split) - 1, n).round().astype(np.int64)
  count, sums, squares, counts_Cx256 = 0, 0.0, 0.0, 0
  for start in range(0, n, chunk):
    x = split.gather(indices[start:start + chunk])["x"]
    channels = x.shape[-1]
    if x.dtype == np.uint8:
      counts_Cx256 = counts_Cx256 + byte_counts(x)
    else:
      x_CxN = np.moveaxis(preprocess({"x": x})["x"], -1, 0).reshape(channels, -1)  # a copy, channels contiguous
      count += x_CxN.shape[1]
      sums, squares = sums + x_CxN.sum(1, np.float64), squares + np.square(x_CxN).sum(1, np.float64)
  if count == 0:  # uint8 inputs: counted, not summed
    return stats_of_byte_counts(counts_Cx256)
  return _mean_std(count, sums, squares)


def byte_counts(x):
  """How often each byte value occurs in each channel (the last axis) of uint8 `x`: int64 [C, 256]."""
  return np.stack([np.bincount(x[..., c].ravel(), minlength=256) for c in range(x.shape[-1])])


def stats_of_byte_counts(counts_Cx256):
  """(mean, std) per channel of the preprocessed values of uint8 inputs counted by `byte_counts`."""
  counts_Cx256 = np.asarray(counts_Cx256, np.float64)
  value_256 = np.arange(256) / 255.0  # what preprocess makes of each byte
  return _mean_std(counts_Cx256.sum(1)[0], counts_Cx256 @ value_256, counts_Cx256 @ value_256**2)


def _mean_std(count, sums, squares):
  mean = sums / count
  std = np.sqrt(np.maximum(squares / count - mean * mean, 0))
  return mean.astype(np.float32), (std + 1e-6).astype(np.float32)


def host_slice(global_batch_size, i=None, n=None):
  """The rows of each global batch that host i of n reads (each host reads only its own)."""
  n = jax.process_count() if n is None else n
  i = jax.process_index() if i is None else i
  if global_batch_size % n:
    raise errors.UserError(f"batch_size {global_batch_size} must divide evenly over {n} hosts.")
  per_host = global_batch_size // n
  return slice(i * per_host, (i + 1) * per_host)


class ShuffledBatches:
  """Batch b of an endless stream of epochs, each a seeded permutation of range(n).

  Does what grain's `shuffle().repeat().batch()` does, vectorised: grain shuffles
  one index at a time (~20 µs each, 2.7 ms per batch of 128 measured here).
  """

  def __init__(self, n, batch_size, seed):
    self.n, self.batch_size, self.seed = n, batch_size, seed

  def __len__(self):
    return sys.maxsize

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch):
    return np.random.default_rng([self.seed, epoch]).permutation(self.n)

  def __getitem__(self, b):
    pos_B = np.arange(b * self.batch_size, (b + 1) * self.batch_size)
    epoch_B, i_B = np.divmod(pos_B, self.n)
    out_B = np.empty_like(pos_B)
    for epoch in np.unique(epoch_B):  # a batch spans at most two epochs
      here = epoch_B == epoch
      out_B[here] = self._permutation(int(epoch))[i_B[here]]
    return out_B


def train_iterator(split, c, seed, norm=None, mask=None, workers=0, stored=False):
  """An endless iterator of preprocessed training batches; has get_state/set_state.

  `norm`: (mean, std) to standardise inputs with; `mask(batch, rng)`: masked-LM masking; `workers`: processes
  that make the batches (0: grain's threads in this process; see `worker_count`); `stored`: the batches as
  stored (uint8 pixels, augmented), for the train step to scale and normalise (feed.HostFeed)."""
  import grain  # here: runs with the training split on the device never need it (0.3 s to import)
  if c.batch_size > len(split):
    raise errors.UserError(f"data.batch_size={c.batch_size} exceeds the training split's {len(split)} examples.")
  mine = host_slice(c.batch_size)
  # A split too big for a permutation of its examples brings its own order (tokens.WindowOrder).
  order = split.batches(c.batch_size, seed) if hasattr(split, "batches") else ShuffledBatches(len(split), c.batch_size,
                                                                                                seed)
  ds = grain.MapDataset.source(order).map(lambda idx_B: split.gather(idx_B[mine]))
  if c.augment:  # on the stored pixels (uint8: a quarter of float32's bytes to pad, cut and mirror), before scaling
    apply = augment.build(c.augment, c.crop_padding)
    # Each host its own stream of crops and flips.
    aug_seed = int(np.random.SeedSequence([seed, jax.process_index()]).generate_state(1)[0])
    ds = ds.random_map(lambda batch, rng: {**batch, "x": apply(batch["x"], rng)}, seed=aug_seed)
  if not stored:
    ds = ds.map(lambda batch: normalize(preprocess(batch), norm))
  if mask is not None:
    ds = ds.random_map(mask, seed=int(np.random.SeedSequence([seed, jax.process_index(), 1]).generate_state(1)[0]))
  options = grain.ReadOptions(num_threads=c.num_threads, prefetch_buffer_size=c.prefetch)
  stream = ds.to_iter_dataset(options)
  if workers:  # batch b is made by worker b % workers; grain interleaves them back in order of b
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain reads its absl flags as it starts workers: a notebook's or a test's
      flags.FLAGS.mark_as_parsed()   # program never parsed any, and gets their defaults
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                             per_worker_buffer_size=max(1, c.prefetch // workers)))
  return iter(stream)


def worker_count(dataset, split, c):
  """The processes that read and prepare training batches (data.workers; -1 = one per core): for images read
  from files only. A split held in memory would be copied into each of them and is gathered faster than a
  process starts; token windows are a copy each, no work for a process."""
  if getattr(split, "on_device", False) or dataset.input_dtype == "int32":
    return 0
  return c.workers if c.workers >= 0 else os.cpu_count()


EVAL_WINDOWS = 8192  # data.eval_examples=-1: a corpus's split of more windows is evaluated on this many


def eval_indices(n, limit, corpus):
  """The examples evaluated of a split of `n`: the first `limit` (> 0), all (0), or with -1 all but of a
  corpus's split over EVAL_WINDOWS windows: EVAL_WINDOWS evenly spread ones, the same at every evaluation."""
  if limit > 0:
    return np.arange(min(n, limit))
  if limit < 0 and corpus and n > EVAL_WINDOWS:
    return np.arange(EVAL_WINDOWS) * n // EVAL_WINDOWS
  return np.arange(n)


def eval_batches(split, batch_size, norm=None, mask=None, indices=None):
  """The split's examples `indices` (default: all) in fixed-size batches; the last is padded and
  `mask` marks real rows."""
  mine = host_slice(batch_size)
  indices = np.arange(len(split)) if indices is None else indices
  n = len(indices)
  for start in range(0, n, batch_size):
    pos_B = np.arange(start, start + batch_size)
    mask_B = pos_B < n
    idx_B = indices[np.where(mask_B, pos_B, 0)]
    batch = normalize(preprocess(split.gather(idx_B[mine])), norm)
    if mask is not None:  # the same masks at every evaluation
      batch = mask(batch, np.random.default_rng([start, jax.process_index()]))
    batch["mask"] = mask_B[mine]
    yield batch
