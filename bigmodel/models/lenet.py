"""LeNet-5 (LeCun et al. 1998), with ReLU and max-pooling as it is trained today.

conv 5x5 x6 -> pool 2 -> conv 5x5 x16 -> pool 2 -> dense 120 -> dense 84 -> head.
The first conv pads by 2, so a 28x28 image gives LeNet's original 32x32 maps.
"""
import flax.linen as nn
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register
from bigmodel.registry import at_least, field


@register("lenet")
class LeNet(nn.Module):
  num_outputs: int = field(meaning="classes, targets or vocabulary of the head; the trainer fills it from the dataset "
                                   "and loss", range=at_least(1))
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    del train  # no dropout or batch statistics
    if x_BxHxWxC.ndim == 3:  # grey images without a channel axis
      x_BxHxWxC = x_BxHxWxC[..., None]
    if min(x_BxHxWxC.shape[1:3]) < 10:
      raise errors.UserError(f"LeNet needs images of at least 10x10; got {x_BxHxWxC.shape[1:3]}. "
                             "Resize them (data.image_size) or use cnn2d/resnet18.")
    h = x_BxHxWxC.astype(self.dtype)
    h = nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding=2, dtype=self.dtype, name="conv0")(h)), (2, 2), (2, 2))
    h = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID", dtype=self.dtype, name="conv1")(h)), (2, 2), (2, 2))
    h = h.reshape(h.shape[0], -1)
    h = nn.relu(nn.Dense(120, dtype=self.dtype, name="dense0")(h))
    h = nn.relu(nn.Dense(84, dtype=self.dtype, name="dense1")(h))
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(h).astype(jnp.float32)
