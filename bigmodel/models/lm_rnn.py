"""LSTM language model (Zaremba et al. 2014): embedding -> stacked LSTM -> softmax over the vocabulary."""
import flax.linen as nn
import jax.numpy as jnp

from bigmodel.models import register


@register("lstm_lm")
class LSTMLanguageModel(nn.Module):
  num_outputs: int  # the vocabulary (the trainer fills it from the tokenizer)
  dim: int = 256  # embedding width
  hidden: int = 512
  num_layers: int = 2
  dropout: float = 0.0  # between layers, as in the paper
  dtype: str = "float32"

  @nn.compact
  def __call__(self, tokens_BxL, train: bool = False):
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    valid_BxL = tokens_BxL >= 0  # -1 pads embed as zeros
    h_BxLxD = nn.Embed(self.num_outputs, self.dim, name="embed")(jnp.maximum(tokens_BxL, 0)) * valid_BxL[..., None]
    h_BxLxH = drop(h_BxLxD.astype(self.dtype))
    for i in range(self.num_layers):
      h_BxLxH = drop(nn.RNN(nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype), name=f"lstm{i}")(h_BxLxH))
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="lm_head")(h_BxLxH).astype(jnp.float32)
