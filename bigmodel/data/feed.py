"""How training batches reach the train step: from the host through grain, or gathered on the device.

A feed gives the inputs of the next `n` steps stacked on axis 1 and padded to `K` columns
(`next(n, K)`); `prepare(device_data, column)` runs inside the jitted step and turns one column
into the step's batch; `device_data` is what the step reads from the devices (None when the host
sends whole batches); `get_state()` / `set_state()` are the position checkpoints save and resume.
Both feeds draw the same examples in the same order (`pipeline.ShuffledBatches`), each host
only its own rows of every global batch, and save their position as {"next_index": batches drawn}.
"""
import jax
import numpy as np

from bigmodel.data import pipeline


def make(dataset, c, seed, sharding):
  """The feed for `dataset`'s training split under data config `c`: on the device (placed with
  `sharding`) if the split is held in memory and fits `c.on_device_mb`, else from the host.

  Augmentations and masked-LM masking run on the host (grain), so those datasets stay host-fed."""
  split = dataset.splits[c.train_split]
  if (not c.augment and dataset.mask is None and getattr(split, "on_device", False)
      and sum(x.nbytes for x in jax.tree.leaves(split)) <= c.on_device_mb * 2**20):
    return DeviceFeed(split, c, seed, dataset.norm, sharding)
  stored = dataset.mask is None and split.gather(np.zeros(1, np.int64))["x"].dtype == np.uint8
  return HostFeed(split, c, seed, dataset.norm, dataset.mask, pipeline.worker_count(dataset, split, c), stored)


class HostFeed:
  """Whole batches from grain's threads, or its worker processes (`workers`). With `stored`, uint8 images cross
  to the device as stored (a quarter of float32's bytes, through the workers' pipes and to the accelerator) and
  are scaled and normalised inside the step; other batches arrive preprocessed, used as they come."""
  device_data = None

  def __init__(self, split, c, seed, norm, mask, workers=0, stored=False):
    self.stored, self.norm = stored, norm
    self._make = lambda: pipeline.train_iterator(split, c, seed, norm, mask, workers, stored=self.stored)
    self._iter = None  # made on first use: building a feed must not start grain's threads

  @property
  def iterator(self):
    if self._iter is None:
      self._iter = self._make()
    return self._iter

  def next(self, n, K):
    batches = [next(self.iterator) for _ in range(n)]
    return jax.tree.map(lambda *xs: np.stack(xs, 1), *batches, *batches[-1:] * (K - n))

  def prepare(self, device_data, column):
    del device_data
    return pipeline.normalize(pipeline.preprocess(column), self.norm) if self.stored else column

  def get_state(self):
    return self.iterator.get_state()

  def set_state(self, state):
    self.iterator.set_state(state)


class DeviceFeed:
  """The split copied to the devices once (replicated); a step's batch is gathered there from B
  example indices, so only B integers cross to the device per step and no host work runs."""

  def __init__(self, split, c, seed, norm, sharding):
    self.device_data = jax.device_put(split, sharding)
    self.order = pipeline.ShuffledBatches(len(split), c.batch_size, seed)
    self.mine = pipeline.host_slice(c.batch_size)
    self.norm = norm
    self.next_index = 0  # batches drawn so far

  def next(self, n, K):
    columns = [self.order[b][self.mine] for b in range(self.next_index, self.next_index + n)]
    self.next_index += n
    return {"idx": np.stack(columns + columns[-1:] * (K - n), 1).astype(np.int32)}

  def prepare(self, device_data, column):
    return pipeline.normalize(pipeline.preprocess(device_data.gather(column["idx"])), self.norm)

  def get_state(self):
    return {"next_index": self.next_index}

  def set_state(self, state):
    self.next_index = int(state["next_index"])
