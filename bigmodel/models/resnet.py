"""ResNet-18/34/50 (He et al. 2016) with BatchNorm.

Stem -> four stages of residual blocks (widths 64, 128, 256, 512 x `width/64`; each
stage after the first halves the resolution) -> global average pool -> head.
ResNet-18/34 use basic blocks (two 3x3 convs), ResNet-50 bottlenecks (1x1, 3x3, 1x1 x4).

`stem="imagenet"` is the paper's 7x7/2 conv and 3x3/2 max-pool (for 224x224);
`stem="small"` is one 3x3/1 conv and no pool, the usual choice for 28x28 or 32x32.
`padding="symmetric"` pads k // 2 on every side, as PyTorch and the microsoft/resnet-*
checkpoints do (bigmodel/huggingface/); "same" (XLA's SAME) pads a strided conv of an
even-sized input one pixel more on the bottom and right.

BatchNorm statistics are the `batch_stats` collection, which the trainer keeps in
`TrainState.model_state`. Under data parallelism the batch is one global array
sharded over devices, so the mean over its batch axis is already the mean over all
devices (XLA inserts the all-reduce): every device holds the same statistics.
Evaluation (`train=False`) uses the running averages.
"""
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register
from bigmodel.registry import FRACTION, at_least, field


class BasicBlock(nn.Module):
  width: int
  stride: int
  norm: callable
  conv: callable

  @nn.compact
  def __call__(self, x):
    h = nn.relu(self.norm(name="bn0")(self.conv(self.width, (3, 3), self.stride, name="conv0")(x)))
    # Zero-init the last BatchNorm scale: each block starts as the identity (Goyal et al. 2017).
    h = self.norm(name="bn1", scale_init=nn.initializers.zeros)(self.conv(self.width, (3, 3), name="conv1")(h))
    if x.shape != h.shape:
      x = self.norm(name="proj_bn")(self.conv(self.width, (1, 1), self.stride, name="proj")(x))
    return nn.relu(x + h)


class Bottleneck(nn.Module):
  width: int
  stride: int
  norm: callable
  conv: callable
  expansion = 4

  @nn.compact
  def __call__(self, x):
    h = nn.relu(self.norm(name="bn0")(self.conv(self.width, (1, 1), name="conv0")(x)))
    h = nn.relu(self.norm(name="bn1")(self.conv(self.width, (3, 3), self.stride, name="conv1")(h)))
    h = self.norm(name="bn2", scale_init=nn.initializers.zeros)(
        self.conv(self.width * self.expansion, (1, 1), name="conv2")(h))
    if x.shape != h.shape:
      x = self.norm(name="proj_bn")(self.conv(self.width * self.expansion, (1, 1), self.stride, name="proj")(x))
    return nn.relu(x + h)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _conv(features, kernel_size, strides=1, *, symmetric, **kwargs):
  """nn.Conv padded k // 2 on each side (symmetric) or XLA's SAME."""
  padding = [(k // 2, k // 2) for k in kernel_size] if symmetric else "SAME"
  return nn.Conv(features, kernel_size, strides, padding=padding, **kwargs)


class ResNet(nn.Module):
  num_outputs: int = field(meaning="classes, targets or vocabulary of the head; the trainer fills it from the dataset "
                                   "and loss", range=at_least(1))
  stage_sizes: Sequence[int] = field((2, 2, 2, 2), "residual blocks in each stage", at_least(1))
  block: str = field("basic", "basic | bottleneck")
  width: int = field(64, "channels of the first stage; later stages double it", at_least(1))
  stem: str = field("imagenet", "imagenet (7x7/2 conv + 3x3/2 pool) | small (3x3/1 conv)")
  bn_momentum: float = field(0.9, "BatchNorm's running-average momentum", FRACTION)
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")
  remat: bool = field(False, "recompute each block's activations in the backward pass: less memory, more compute")
  padding: str = field("same", "same | symmetric (k // 2 each side: PyTorch, the microsoft/resnet-* checkpoints)")

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    if x_BxHxWxC.ndim == 3:
      x_BxHxWxC = x_BxHxWxC[..., None]
    if self.padding not in ("same", "symmetric"):
      raise errors.UserError(f"Unknown ResNet padding {self.padding!r}. Known: same, symmetric.")
    conv = functools.partial(_conv, symmetric=self.padding == "symmetric", use_bias=False, dtype=self.dtype)
    pool_padding = ((1, 1), (1, 1)) if self.padding == "symmetric" else "SAME"
    # Statistics are computed in float32 whatever the compute dtype (flax does so for bf16 inputs).
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-5, dtype=self.dtype)
    h = x_BxHxWxC.astype(self.dtype)
    if self.stem == "imagenet":
      h = nn.relu(norm(name="stem_bn")(conv(self.width, (7, 7), 2, name="stem_conv")(h)))
      h = nn.max_pool(h, (3, 3), (2, 2), padding=pool_padding)
    elif self.stem == "small":
      h = nn.relu(norm(name="stem_bn")(conv(self.width, (3, 3), name="stem_conv")(h)))
    else:
      raise errors.UserError(f"Unknown ResNet stem {self.stem!r}. Known: imagenet, small.")
    block = nn.remat(BLOCKS[self.block]) if self.remat else BLOCKS[self.block]
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        stride = 2 if i > 0 and j == 0 else 1
        h = block(self.width * 2 ** i, stride, norm, conv, name=f"stage{i}_block{j}")(h)
    h_BxD = h.mean(axis=(1, 2))
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(h_BxD).astype(jnp.float32)


register("resnet")(ResNet)
register("resnet18", stage_sizes=(2, 2, 2, 2), block="basic")(ResNet)
register("resnet34", stage_sizes=(3, 4, 6, 3), block="basic")(ResNet)
register("resnet50", stage_sizes=(3, 4, 6, 3), block="bottleneck")(ResNet)
