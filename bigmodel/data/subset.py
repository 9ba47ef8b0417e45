"""A label budget: training on `data.train_examples` = N examples of the training split.

The N are a seeded choice: the same N and seed give the same examples, another seed others. In a
labelled dataset each class keeps its share of the split (largest remainders, so the shares add up
to exactly N; every class keeps at least one example when N is at least the number of classes),
so a small budget is not also a shift in the class balance. Other datasets draw N uniformly.
Only the training split changes; evaluation reads its own split whole.
"""
import dataclasses
import functools

import jax
import numpy as np

from bigmodel import errors
from bigmodel.data.dataset import InMemory

_STREAM = 0x5EED  # a seed stream of its own: the epoch permutations draw from [seed, epoch]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["split", "indices_N"], meta_fields=[])
@dataclasses.dataclass
class Subset:
  """The examples `indices_N` of `split`, renumbered 0..N-1. A pytree when `split` is one, so a
  subset of a corpus's windows is gathered on the accelerator like the corpus (feed.py)."""
  split: object
  indices_N: object

  @property
  def on_device(self):
    return getattr(self.split, "on_device", False)

  def __len__(self):
    return len(self.indices_N)

  def gather(self, indices):
    return self.split.gather(self.indices_N[indices])


def shares(counts_K, n):
  """How many of each class's `counts_K` examples a stratified sample of `n` keeps: the proportional
  shares n * count / total, rounded by largest remainder to sum to n; then, if n allows, every class
  present gets at least one, taken from the class furthest above its share."""
  counts_K = np.asarray(counts_K, np.int64)
  quota_K = n * counts_K / counts_K.sum()
  take_K = np.floor(quota_K).astype(np.int64)
  leftover = n - take_K.sum()
  take_K[np.argsort(-(quota_K - take_K), kind="stable")[:leftover]] += 1
  present_K = counts_K > 0
  if n >= present_K.sum():
    for k in np.flatnonzero(present_K & (take_K == 0)):
      donor = np.argmax(np.where(take_K > 1, take_K - quota_K, -np.inf))
      take_K[donor] -= 1
      take_K[k] = 1
  return take_K


def choose(n, labels_N=None, num_examples=None, seed=0):
  """Sorted indices of `n` examples: stratified by `labels_N` when given, else uniform over
  `num_examples`."""
  rng = np.random.default_rng([seed, _STREAM])
  if labels_N is None:
    return np.sort(rng.choice(num_examples, n, replace=False))
  classes_K, labels_N = np.unique(labels_N, return_inverse=True)
  take_K = shares(np.bincount(labels_N, minlength=len(classes_K)), n)
  picked = [rng.permutation(np.flatnonzero(labels_N == k))[:t] for k, t in enumerate(take_K)]
  return np.sort(np.concatenate(picked))


def _labels(split):
  """The split's labels; a streamed split is read once."""
  if isinstance(split, InMemory):
    return split.arrays["y"]
  return split.labels() if hasattr(split, "labels") else split.gather(np.arange(len(split)))["y"]


def of_training_split(dataset, c, seed):
  """`dataset` with its training split cut to `c.train_examples` examples (0: unchanged)."""
  n, split = c.train_examples, dataset.splits[c.train_split]
  if not n:
    return dataset
  if n > len(split):
    raise errors.UserError(f"data.train_examples={n} is more than the {len(split):,} examples of the "
                           f"{c.train_split!r} split: lower it (at most {len(split)}), or 0 for all of them.")
  if dataset.kind == "labelled":
    labels_N = np.asarray(_labels(split))
    indices_N = choose(n, labels_N if labels_N.ndim == 1 else None, len(split), seed)
  else:
    indices_N = choose(n, None, len(split), seed)
  # A split in memory stays one (smaller) array per feature; others are read through the indices.
  subset = InMemory(split.gather(indices_N)) if isinstance(split, InMemory) else Subset(split, indices_N)
  # Statistics a dataset brought for its whole training split are not the subset's: data.load takes them anew.
  return dataclasses.replace(dataset, splits={**dataset.splits, c.train_split: subset}, norm=None)
