"""Multi-layer perceptron; depth 0 is logistic regression.

The MNIST-1D paper's MLP is depth 2, width 100, with a residual second layer:
h = relu(W1 x); h = h + relu(W2 h); logits = W3 h.
"""
import flax.linen as nn
import jax.numpy as jnp

from bigmodel.models import register
from bigmodel.registry import FRACTION, at_least, field


@register("mlp")
@register("logistic_regression", depth=0)
class MLP(nn.Module):
  num_outputs: int = field(meaning="classes, targets or vocabulary of the head; the trainer fills it from the dataset "
                                   "and loss", range=at_least(1))
  width: int = field(100, "hidden units of each layer", at_least(1))
  depth: int = field(2, "hidden layers; 0 = logistic regression", at_least(0))
  residual: bool = field(True, "layers after the first add their input back")
  dropout: float = field(0.0, "dropout rate in training", FRACTION)
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")

  @nn.compact
  def __call__(self, x, train: bool = False):
    h_BxD = x.reshape(x.shape[0], -1).astype(self.dtype)
    for i in range(self.depth):
      z_BxW = nn.relu(nn.Dense(self.width, dtype=self.dtype, name=f"dense{i}")(h_BxD))
      h_BxD = h_BxD + z_BxW if self.residual and i > 0 else z_BxW
      h_BxD = nn.Dropout(self.dropout, deterministic=not train)(h_BxD)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(h_BxD).astype(jnp.float32)
