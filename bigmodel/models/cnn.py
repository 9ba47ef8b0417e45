"""Plain convolutional classifiers: conv-relu stacks, flattened into a linear head.

`cnn1d` defaults to the MNIST-1D paper's model: three conv layers of 25 channels,
kernels 5, 3, 3, stride 2, padding 1 (length 40 -> 19 -> 10 -> 5), then linear.
"""
import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register
from bigmodel.registry import FRACTION, Range, at_least, field


def conv_as_matmul(x, kernel, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, precision=None):
  """`lax.conv_general_dilated` for channels-last inputs, as (patches of x) @ kernel.

  XLA:CPU runs convolutions inside a loop (`steps_per_call` > 1) as naive loops instead of
  Eigen, 3-4x slower (jax#12868); slices and one matmul do not have that problem
  (`lax.conv_general_dilated_patches` would not help: it is itself a convolution). Same
  parameters and results; im2col memory (kernel-size copies of the input), so small models only."""
  del dimension_numbers  # flax passes channels-last: (batch, spatial..., features)
  if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))) or feature_group_count != 1:
    raise errors.UserError("model.conv_impl='matmul' supports plain convolutions only (no dilation, no groups).")
  window = kernel.shape[:-2]
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:-1], window, window_strides, padding)
  x = jnp.pad(x, [(0, 0), *padding, (0, 0)])
  out = [(x.shape[1 + i] - w) // s + 1 for i, (w, s) in enumerate(zip(window, window_strides))]
  patches = [x[(slice(None), *(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, window_strides, out)))]
             for offset in itertools.product(*map(range, window))]
  patches_BxOxPxC = jnp.stack(patches, axis=-2)
  kernel_PxCxF = kernel.reshape(-1, *kernel.shape[-2:])
  return jnp.einsum("...pc,pcf->...f", patches_BxOxPxC, kernel_PxCxF, precision=precision)


class ConvNet(nn.Module):
  """Conv layers (each optionally max-pooled), then optional dense, then the head."""
  num_outputs: int = field(meaning="classes, targets or vocabulary of the head; the trainer fills it from the dataset "
                                   "and loss", range=at_least(1))
  ndim: int = field(1, "1 for sequences (B, L, C), 2 for images (B, H, W, C)", Range(1, 2))
  channels: Sequence[int] = field((25, 25, 25), "output channels of each conv layer", at_least(1))
  kernel_sizes: Sequence[int] = field((5, 3, 3), "kernel width of each conv layer", at_least(1))
  strides: Sequence[int] = field((2, 2, 2), "stride of each conv layer", at_least(1))
  padding: int = field(1, "zero padding of each conv layer, per side", at_least(0))
  pool: int = field(1, "max-pool window and stride after each conv; 1 = none", at_least(1))
  hidden: int = field(0, "width of a dense layer before the head; 0 = none", at_least(0))
  dropout: float = field(0.0, "dropout rate in training", FRACTION)
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")
  conv_impl: str = field("lax", "lax | matmul (see conv_as_matmul: faster with steps_per_call > 1 on CPU)")

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim == self.ndim + 1:  # no channel axis yet
      x = x[..., None]
    if self.conv_impl not in ("lax", "matmul"):
      raise errors.UserError(f"model.conv_impl must be 'lax' or 'matmul', got {self.conv_impl!r}.")
    h = x.astype(self.dtype)
    for i, (c, k, s) in enumerate(zip(self.channels, self.kernel_sizes, self.strides, strict=True)):
      h = nn.Conv(c, (k,) * self.ndim, strides=(s,) * self.ndim,
                  padding=[(self.padding, self.padding)] * self.ndim,
                  dtype=self.dtype, name=f"conv{i}",
                  conv_general_dilated=conv_as_matmul if self.conv_impl == "matmul" else None)(h)
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
