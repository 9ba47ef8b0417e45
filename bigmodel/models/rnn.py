"""GRU and LSTM classifiers over a sequence, uni- or bidirectional (flax `nn.RNN`).

The MNIST-1D paper's model is a bidirectional GRU with hidden size 6 whose
linear head reads the outputs at all 40 time steps (`readout="flatten"`).
`cell="gru_torch"` is PyTorch's GRU cell (`TorchGRUCell`), `cell="gru"` flax's.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register
from bigmodel.registry import at_least, field


class TorchGRUCell(nn.RNNCellBase):
  """torch.nn.GRU's cell in flax: its parameters, initialisation and maths, gates in its order r, z, n.

  Why it exists: `nn.GRUCell` computes the same function but starts elsewhere. Its input kernels
  are lecun-normal (std 1 for MNIST-1D's one input feature), its recurrent kernels orthogonal, its
  biases zero, and b_ir + b_hr (b_iz + b_hz) are one parameter; torch keeps b_ih and b_hh apart
  and draws every weight and bias from U(-1/sqrt(H), 1/sqrt(H)). Under the MNIST-1D paper's Adam
  at a constant 1e-2 the initialisation is what matters (configs/mnist1d/gru.py has the numbers).
  Parameters are torch's, transposed: ih_kernel = weight_ih_l0.T (F x 3H), hh_kernel =
  weight_hh_l0.T (H x 3H), ih_bias = bias_ih_l0 and hh_bias = bias_hh_l0 (3H).
  """
  features: int
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h_BxH, x_BxF):
    H, bound = self.features, self.features ** -0.5
    init = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)
    param = lambda name, *shape: self.param(name, init, shape, self.param_dtype).astype(self.dtype or x_BxF.dtype)
    gi_Bx3H = x_BxF @ param("ih_kernel", x_BxF.shape[-1], 3 * H) + param("ih_bias", 3 * H)
    gh_Bx3H = h_BxH @ param("hh_kernel", H, 3 * H) + param("hh_bias", 3 * H)
    (ir_BxH, iz_BxH, in_BxH), (hr_BxH, hz_BxH, hn_BxH) = (jnp.split(g, 3, axis=-1) for g in (gi_Bx3H, gh_Bx3H))
    r_BxH, z_BxH = nn.sigmoid(ir_BxH + hr_BxH), nn.sigmoid(iz_BxH + hz_BxH)
    n_BxH = jnp.tanh(in_BxH + r_BxH * hn_BxH)  # the reset gate scales W_hn h + b_hn, bias included
    h_BxH = (1.0 - z_BxH) * n_BxH + z_BxH * h_BxH.astype(n_BxH.dtype)
    return h_BxH, h_BxH

  @nn.nowrap
  def initialize_carry(self, rng, input_shape):
    return jnp.zeros((*input_shape[:-1], self.features), self.param_dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


CELLS = {"gru": nn.GRUCell, "gru_torch": TorchGRUCell, "lstm": nn.OptimizedLSTMCell}
READOUTS = ("flatten", "last", "mean")


class RNNClassifier(nn.Module):
  num_outputs: int = field(meaning="classes, targets or vocabulary of the head; the trainer fills it from the dataset "
                                   "and loss", range=at_least(1))
  cell: str = field("gru", "gru (flax's GRUCell) | gru_torch (torch.nn.GRU's) | lstm")
  hidden: int = field(6, "units of the recurrent state, per direction", at_least(0))
  num_layers: int = field(1, "layers (blocks) stacked", at_least(1))
  bidirectional: bool = field(True, "a second RNN reads the sequence backwards")
  readout: str = field("flatten", "what the head reads: all steps, the last one, or their mean")
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")

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
