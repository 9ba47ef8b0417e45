"""BERT (Devlin et al. 2019), as in the paper and its checkpoints: a post-LayerNorm encoder.

tokens -> word + position + token-type embeddings -> LayerNorm -> dropout
-> `num_layers` x [x = LN(x + attn(x)); x = LN(x + MLP(x))]
-> pool="none": the masked-LM head (dense, GELU, LN, then logits tied to the word embeddings, plus a bias)
   pool="cls":  the pooler (dense + tanh on the first token, [CLS]) -> dropout -> a fresh classifier `head`
   pool="mean": the mean of the real tokens' final hidden states (how sentence-transformers pools its
                BERTs, all-MiniLM-L6-v2 among them) -> dropout -> a fresh classifier `head`.

Unlike the pre-LayerNorm encoder of gpt.py (`bert_tiny` ... there), every sub-layer's output
is normalised after the residual sum, the GELU is the exact erf form, and LayerNorm's epsilon
is 1e-12: what Hugging Face's BertModel computes, so its checkpoints load (bigmodel/huggingface/).
Token id -1 is padding: never attended to. Every text is one segment (token type 0).
"""
import flax.linen as nn
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register, stack
from bigmodel.models.attention import attend
from bigmodel.models.layers import dense, named
from bigmodel.registry import FRACTION, above, at_least, field


class Attention(nn.Module):
  """softmax(Q Kᵀ / √d) V over `num_heads` heads, with separate query, key and value projections."""
  num_heads: int
  dropout: float
  dtype: str
  attention: str = "auto"  # the kernel: see models/attention.py

  @nn.compact
  def __call__(self, x_BxLxD, valid_BxL, train):
    B, L, D = x_BxLxD.shape
    H, init = self.num_heads, nn.initializers.normal(0.02)
    split = lambda name: dense(D, ("embed", "heads"), init, self.dtype, name)(x_BxLxD).reshape(B, L, H, D // H)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = split("query"), split("key"), split("value")
    drop = nn.Dropout(self.dropout, deterministic=False) if train and self.dropout else None
    out_BxLxD = attend(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, implementation=self.attention, keys_BxS=valid_BxL,
                       drop=drop).reshape(B, L, D)
    return dense(D, ("heads", "embed"), init, self.dtype, "out")(out_BxLxD)


class Layer(nn.Module):
  num_heads: int
  mlp_dim: int
  dropout: float
  ln_epsilon: float
  dtype: str
  attention: str = "auto"

  @nn.compact
  def __call__(self, x_BxLxD, valid_BxL, train):
    D, init = x_BxLxD.shape[-1], nn.initializers.normal(0.02)
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    norm = lambda name: nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name=name)
    attn = Attention(self.num_heads, self.dropout, self.dtype, self.attention, name="attn")
    x_BxLxD = norm("ln_attn")(x_BxLxD + drop(attn(x_BxLxD, valid_BxL, train)))
    h = nn.gelu(dense(self.mlp_dim, ("embed", "mlp"), init, self.dtype, "mlp_in")(x_BxLxD), approximate=False)
    return norm("ln_mlp")(x_BxLxD + drop(dense(D, ("mlp", "embed"), init, self.dtype, "mlp_out")(h)))


class BERT(nn.Module):
  num_outputs: int = field(meaning='the vocabulary for masked-LM; the classes when pool="cls"', range=at_least(1))
  vocab_size: int = field(0, "token ids; 0 = num_outputs (masked-LM). The trainer fills it from the tokenizer",
                             at_least(0))
  type_vocab_size: int = field(2, "segment ids the checkpoint has embeddings for (only segment 0 is used)", at_least(1))
  num_layers: int = field(12, "layers (blocks) stacked", at_least(1))
  num_heads: int = field(12, "attention heads", at_least(1))
  dim: int = field(768, "model width D (embeddings and residual stream)", at_least(1))
  mlp_dim: int = field(3072, "hidden units of each block's MLP", at_least(0))
  max_len: int = field(512, "longest sequence (learned position embeddings)", at_least(1))
  pool: str = field("none", "none (masked-LM logits per token) | cls (pooled [CLS] -> classifier) | mean (-> "
                            "classifier)")
  dropout: float = field(0.1, "dropout rate in training", FRACTION)
  ln_epsilon: float = field(1e-12, "LayerNorm's epsilon", above(0))
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")
  attention: str = field("auto", "auto | xla | cudnn | einsum (models/attention.py)")
  scan_layers: bool = field(False, "one nn.scan over the layers (params layer_stack/...): see models/stack.py")
  remat: str = field("none", "none | full | dots: recompute activations in the backward pass (models/stack.py)")

  @nn.compact
  def __call__(self, tokens_BxL, train: bool = False):
    B, L = tokens_BxL.shape
    if self.pool not in ("none", "cls", "mean"):
      raise errors.UserError(f"Unknown BERT pool {self.pool!r}. Known: none (masked-LM), cls and mean (classifiers).")
    if L > self.max_len:
      raise errors.UserError(f"Sequence of {L} tokens exceeds model.max_len={self.max_len}.")
    if self.dim % self.num_heads:
      raise errors.UserError(f"model.dim={self.dim} must be divisible by model.num_heads={self.num_heads}.")
    init = nn.initializers.normal(0.02)
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    valid_BxL = tokens_BxL >= 0
    embed = nn.Embed(self.vocab_size or self.num_outputs, self.dim, embedding_init=named(init, "vocab", "embed"),
                     name="embed")
    pos_embed = self.param("pos_embed", named(init, None, "embed"), (self.max_len, self.dim))
    type_embed = self.param("type_embed", named(init, None, "embed"), (self.type_vocab_size, self.dim))
    h_BxLxD = embed(jnp.maximum(tokens_BxL, 0)) + pos_embed[:L] + type_embed[0]
    h_BxLxD = drop(nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln_embed")(h_BxLxD.astype(self.dtype)))
    fields = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout, ln_epsilon=self.ln_epsilon,
                  dtype=self.dtype, attention=self.attention)
    h_BxLxD = stack.blocks(Layer, fields, self.num_layers, "layer", scan=self.scan_layers, remat=self.remat)(
        h_BxLxD, valid_BxL, train)
    if self.pool == "cls":
      pooled_BxD = jnp.tanh(dense(self.dim, ("embed", None), init, self.dtype, "pooler")(h_BxLxD[:, 0]))
      return nn.Dense(self.num_outputs, name="head")(drop(pooled_BxD).astype(jnp.float32))
    if self.pool == "mean":
      w_BxL = valid_BxL.astype(jnp.float32)
      mean_BxD = jnp.einsum("bld,bl->bd", h_BxLxD.astype(jnp.float32), w_BxL) / jnp.maximum(w_BxL.sum(1), 1)[:, None]
      return nn.Dense(self.num_outputs, name="head")(drop(mean_BxD))
    h_BxLxD = nn.gelu(dense(self.dim, ("embed", None), init, self.dtype, "mlm_dense")(h_BxLxD), approximate=False)
    h_BxLxD = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln_mlm")(h_BxLxD)
    bias_V = self.param("mlm_bias", named(nn.initializers.zeros, "vocab"), (self.vocab_size or self.num_outputs,))
    return embed.attend(h_BxLxD.astype(jnp.float32)) + bias_V


# Defaults: BERT-base (Devlin et al. 2019). Pretrained ones load with init.hf (bigmodel/huggingface/).
register("bert")(BERT)
