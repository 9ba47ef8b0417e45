"""Plain convolutional classifiers: conv-relu stacks, flattened into a linear head.

`cnn1d` defaults to the MNIST-1D paper's model: three conv layers of 25 channels,
kernels 5, 3, 3, stride 2, padding 1 (length 40 -> 19 -> 10 -> 5), then linear.
"""
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bigmodel.models import register


class ConvNet(nn.Module):
  """Conv layers (each optionally max-pooled), then optional dense, then the head."""
  num_outputs: int
  ndim: int = 1  # 1 for sequences (B, L, C), 2 for images (B, H, W, C)
  channels: Sequence[int] = (25, 25, 25)
  kernel_sizes: Sequence[int] = (5, 3, 3)
  strides: Sequence[int] = (2, 2, 2)
  padding: int = 1
  pool: int = 1  # max-pool window and stride after each conv; 1 = none
  hidden: int = 0  # width of a dense layer before the head; 0 = none
  dropout: float = 0.0
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim == self.ndim + 1:  # no channel axis yet
      x = x[..., None]
    h = x.astype(self.dtype)
    for i, (c, k, s) in enumerate(zip(self.channels, self.kernel_sizes, self.strides, strict=True)):
      h = nn.Conv(c, (k,) * self.ndim, strides=(s,) * self.ndim,
                  padding=[(self.padding, self.padding)] * self.ndim,
                  dtype=self.dtype, name=f"conv{i}")(h)
      h = nn.relu(h)
      if self.pool > 1:
        h = nn.max_pool(h, (self.pool,) * self.ndim, strides=(self.pool,) * self.ndim)
    h = h.reshape(h.shape[0], -1)
    if self.hidden:
      h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="dense")(h))
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(h).astype(jnp.float32)


register("cnn1d")(ConvNet)
register("cnn2d", ndim=2, channels=(32, 64), kernel_sizes=(3, 3), strides=(1, 1),
         pool=2, hidden=128)(ConvNet)
