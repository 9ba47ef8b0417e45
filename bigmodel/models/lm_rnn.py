"""LSTM language model (Zaremba et al. 2014): embedding -> stacked LSTM -> softmax over the vocabulary."""
import flax.linen as nn
import jax.numpy as jnp

from bigmodel.models import register
from bigmodel.registry import FRACTION, at_least, field


@register("lstm_lm")
class LSTMLanguageModel(nn.Module):
  num_outputs: int = field(meaning="the vocabulary (the trainer fills it from the tokenizer)", range=at_least(1))
  dim: int = field(256, "embedding width", at_least(1))
  hidden: int = field(512, "units of the recurrent state, per direction", at_least(0))
  num_layers: int = field(2, "layers (blocks) stacked", at_least(1))
  dropout: float = field(0.0, "between layers, as in the paper", FRACTION)
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")

  @nn.compact
  def __call__(self, tokens_BxL, train: bool = False):
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    valid_BxL = tokens_BxL >= 0  # -1 pads embed as zeros
    h_BxLxD = nn.Embed(self.num_outputs, self.dim, name="embed")(jnp.maximum(tokens_BxL, 0)) * valid_BxL[..., None]
    h_BxLxH = drop(h_BxLxD.astype(self.dtype))
    for i in range(self.num_layers):
      h_BxLxH = drop(nn.RNN(nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype), name=f"lstm{i}")(h_BxLxH))
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="lm_head")(h_BxLxH).astype(jnp.float32)
