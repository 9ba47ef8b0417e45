"""GRU and LSTM classifiers over a sequence, uni- or bidirectional (flax `nn.RNN`).

The MNIST-1D paper's model is a bidirectional GRU with hidden size 6 whose
linear head reads the outputs at all 40 time steps (`readout="flatten"`).
"""
import flax.linen as nn
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register

CELLS = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}
READOUTS = ("flatten", "last", "mean")


class RNNClassifier(nn.Module):
  num_outputs: int
  cell: str = "gru"
  hidden: int = 6
  num_layers: int = 1
  bidirectional: bool = True
  readout: str = "flatten"  # what the head reads: all steps, the last one, or their mean
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.cell not in CELLS or self.readout not in READOUTS:
      raise errors.UserError(f"RNN cell must be one of {sorted(CELLS)} and readout one of "
                             f"{READOUTS}; got cell={self.cell!r}, readout={self.readout!r}.")
    h_BxLxF = x[..., None] if x.ndim == 2 else x
    h_BxLxF = h_BxLxF.astype(self.dtype)
    make = lambda name: nn.RNN(CELLS[self.cell](self.hidden, dtype=self.dtype), name=name)
    for i in range(self.num_layers):
      if self.bidirectional:
        h_BxLxF = nn.Bidirectional(make(f"fwd{i}"), make(f"bwd{i}"), name=f"birnn{i}")(h_BxLxF)
      else:
        h_BxLxF = make(f"rnn{i}")(h_BxLxF)
    if self.readout == "flatten":
      h_BxD = h_BxLxF.reshape(h_BxLxF.shape[0], -1)
    elif self.readout == "last":
      h_BxD = h_BxLxF[:, -1]
    else:
      h_BxD = h_BxLxF.mean(axis=1)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(h_BxD).astype(jnp.float32)


register("gru", cell="gru")(RNNClassifier)
register("lstm", cell="lstm")(RNNClassifier)
