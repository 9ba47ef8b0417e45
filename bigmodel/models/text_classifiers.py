"""The classic text classifiers over token ids, before Transformers.

`bilstm`:   token embedding -> `num_layers` bidirectional LSTMs -> the last layer's final forward and
            backward states -> head. Keras's IMDB sentiment example (keras.io/examples/nlp/bidirectional_lstm_imdb:
            embedding 128, two BiLSTMs of 64).
`fasttext`: token embedding -> mean over the text -> (a relu Dense of `hidden`) -> head. fastText
            (Joulin et al. 2016, "Bag of Tricks for Efficient Text Classification") with `hidden=0`;
            with a hidden layer, the Keras "text classification from scratch" recipe's pooled Dense.

Token id -1 is padding (data/text.py pads every text at its end): it is embedded as zeros, left
out of the mean, and the LSTMs run over each text's own length (`seq_lengths`), so the backward
LSTM starts at the text's last real token and no final state has seen padding. How much padding
follows a text does not change its logits. A softmax head has one output per class; with
loss=sigmoid_bce and two classes the head is one logit (tasks.py).
"""
import flax.linen as nn
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register
from bigmodel.registry import FRACTION, at_least, field


def embed_tokens(tokens_BxL, vocab_size, dim, dtype):
  """(embeddings_BxLxD with padding as zeros, valid_BxL), from the calling module's `embed`."""
  if not vocab_size:
    raise errors.UserError("model.vocab_size=0: this model reads token ids. Train it on a text dataset "
                           "(data.name=fine_foods, text_csv, imdb_reviews), which sets model.vocab_size.")
  valid_BxL = tokens_BxL >= 0
  h_BxLxD = nn.Embed(vocab_size, dim, name="embed")(jnp.maximum(tokens_BxL, 0)) * valid_BxL[..., None]
  return h_BxLxD.astype(dtype), valid_BxL


@register("bilstm")
class BiLSTMClassifier(nn.Module):
  num_outputs: int = field(meaning="classes, targets or vocabulary of the head; the trainer fills it from the dataset "
                                   "and loss", range=at_least(1))
  vocab_size: int = field(0, "token ids; the trainer fills it from the tokenizer", at_least(0))
  dim: int = field(128, "embedding width", at_least(1))
  hidden: int = field(64, "LSTM state per direction", at_least(0))
  num_layers: int = field(2, "layers (blocks) stacked", at_least(1))
  dropout: float = field(0.0, "on the embeddings, between layers and before the head", FRACTION)
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")

  @nn.compact
  def __call__(self, tokens_BxL, train: bool = False):
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    h_BxLxD, valid_BxL = embed_tokens(tokens_BxL, self.vocab_size, self.dim, self.dtype)
    # An empty text is read as one padding step (embedded as zeros): flax takes the carry at length - 1.
    lengths_B = jnp.maximum(valid_BxL.sum(1), 1)
    h_BxLxH = drop(h_BxLxD)
    for i in range(self.num_layers):
      # The cells are made here, so their parameters are named lstm<i>_fwd / lstm<i>_bwd.
      lstm = lambda name: nn.RNN(nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype, name=name))
      carries, h_BxLxH = nn.Bidirectional(lstm(f"lstm{i}_fwd"), lstm(f"lstm{i}_bwd"))(
          h_BxLxH, seq_lengths=lengths_B, return_carry=True)
      h_BxLxH = drop(h_BxLxH)
    (_, fwd_BxH), (_, bwd_BxH) = carries  # an LSTM's carry is (cell, hidden)
    h_Bx2H = drop(jnp.concatenate([fwd_BxH, bwd_BxH], axis=-1))
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(h_Bx2H).astype(jnp.float32)


@register("fasttext")
class FastTextClassifier(nn.Module):
  num_outputs: int = field(meaning="classes, targets or vocabulary of the head; the trainer fills it from the dataset "
                                   "and loss", range=at_least(1))
  vocab_size: int = field(0, "token ids; the trainer fills it from the tokenizer", at_least(0))
  dim: int = field(64, "embedding width", at_least(1))
  hidden: int = field(64, "a relu Dense on the mean embedding; 0 = none (fastText: the head reads the mean)",
                          at_least(0))
  dropout: float = field(0.0, "on the mean embedding and the hidden layer", FRACTION)
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")

  @nn.compact
  def __call__(self, tokens_BxL, train: bool = False):
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    h_BxLxD, valid_BxL = embed_tokens(tokens_BxL, self.vocab_size, self.dim, self.dtype)
    count_B = jnp.maximum(valid_BxL.sum(1), 1).astype(jnp.float32)
    h_BxD = drop((h_BxLxD.astype(jnp.float32).sum(1) / count_B[:, None]).astype(self.dtype))
    if self.hidden:
      h_BxD = drop(nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="dense")(h_BxD)))
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(h_BxD).astype(jnp.float32)
