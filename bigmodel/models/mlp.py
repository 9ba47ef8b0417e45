"""Multi-layer perceptron; depth 0 is logistic regression.

The MNIST-1D paper's MLP is depth 2, width 100, with a residual second layer:
h = relu(W1 x); h = h + relu(W2 h); logits = W3 h.
"""
import flax.linen as nn
import jax.numpy as jnp

from bigmodel.models import register


@register("mlp")
@register("logistic_regression", depth=0)
class MLP(nn.Module):
  num_outputs: int
  width: int = 100
  depth: int = 2
  residual: bool = True  # layers after the first add their input back
  dropout: float = 0.0
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    h_BxD = x.reshape(x.shape[0], -1).astype(self.dtype)
    for i in range(self.depth):
      z_BxW = nn.relu(nn.Dense(self.width, dtype=self.dtype, name=f"dense{i}")(h_BxD))
      h_BxD = h_BxD + z_BxW if self.residual and i > 0 else z_BxW
      h_BxD = nn.Dropout(self.dropout, deterministic=not train)(h_BxD)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(h_BxD).astype(jnp.float32)
