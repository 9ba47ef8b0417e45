"""GPT (Radford et al. 2018/2019) and the BERT-style encoder: one Transformer over tokens.

tokens -> token embedding (+ learned positions, or rotary positions inside attention)
-> dropout -> `num_layers` x [x + attn(LN(x)); x + MLP(LN(x))] -> LN -> logits over the
vocabulary (tied to the token embedding, or a separate `lm_head`).

`causal=True` is GPT: position i attends to positions <= i. `causal=False` is the BERT
encoder, trained with masked-LM. `pool="mean"` or `"last"` turns either into a sequence
classifier: the hidden states are pooled and a fresh `head` maps them to classes; every
other parameter keeps its name, so a pretrained LM loads into the classifier by path.

Token id -1 is padding: it is embedded as zeros, never attended to, and left out of pools.
With `decode=True` the keys and values of past positions live in the "cache" collection,
so generating a token costs one position's work (see bigmodel/generate.py).
"""
import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register, stack
from bigmodel.models.attention import attend
from bigmodel.registry import FRACTION, above, at_least, field


def named(init, *axes):
  """An initializer whose parameter carries logical axis names, for sharding (see bigmodel/sharding.py)."""
  return nn.with_logical_partitioning(init, axes)


def dense(features, axes, init, dtype, name, bias=True):
  """nn.Dense with its kernel's and bias's axes named: `axes` = (input axis, output axis)."""
  return nn.Dense(features, use_bias=bias, dtype=dtype, kernel_init=named(init, *axes),
                  bias_init=named(nn.initializers.zeros, axes[1]), name=name)


def rope(x_BxLxHxK, positions_L, freqs_K2=None):
  """Rotary position embedding (Su et al. 2021): rotate channel pairs by position-dependent angles. The
  pairs are (i, i + K/2), as Hugging Face's Llama and GPT-NeoX have them. `freqs_K2`: one angle per
  position for each pair; the default is the paper's 10000^(-2i/K) (models/llama.py scales them)."""
  K = x_BxLxHxK.shape[-1]
  if freqs_K2 is None:
    freqs_K2 = 1.0 / (10_000 ** (jnp.arange(0, K, 2) / K))
  angles_LxK2 = positions_L[:, None].astype(jnp.float32) * freqs_K2
  sin, cos = jnp.sin(angles_LxK2)[None, :, None], jnp.cos(angles_LxK2)[None, :, None]
  x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x_BxLxHxK.dtype)


def cached(module, k_BxLxHxK, v_BxLxHxK, positions_L, max_len, causal):
  """(keys, values, masks for `attend`) of a decode step: this call's keys and values written into the
  module's "cache" collection at their positions, and the whole cache attended over."""
  B, _, H, K = k_BxLxHxK.shape
  k_cache = module.variable("cache", "key", jnp.zeros, (B, max_len, H, K), k_BxLxHxK.dtype)
  v_cache = module.variable("cache", "value", jnp.zeros, (B, max_len, H, K), v_BxLxHxK.dtype)
  start = positions_L[0]
  k_cache.value = jax.lax.dynamic_update_slice(k_cache.value, k_BxLxHxK, (0, start, 0, 0))
  v_cache.value = jax.lax.dynamic_update_slice(v_cache.value, v_BxLxHxK, (0, start, 0, 0))
  # The queries start at `start`, the keys at 0: causality is by position, and the slots not written
  # yet lie past every query's position (past the last one's, without causality). A cache passed in
  # may hold fewer than max_len positions (the server attends over a bucket of them).
  last_L = positions_L if causal else jnp.full_like(positions_L, positions_L[-1])
  mask_BxLxS = (jnp.arange(k_cache.value.shape[1])[None, :] <= last_L[:, None])[None]
  return k_cache.value, v_cache.value, dict(mask_BxLxS=mask_BxLxS)


def check_choices(**fields):
  """A UserError for a model field (field=(value, known values)) set to a value it does not know."""
  for field, (value, known) in fields.items():
    if value not in known:
      raise errors.UserError(f"Unknown model.{field}={value!r}. Known: {', '.join(known)}.")


def positions(module, L, max_len, decode):
  """The positions of this call's L tokens: 0..L-1, or with `decode` those after the last call's (the
  "cache" collection keeps the count)."""
  if decode:
    index = module.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
    positions_L = index.value + jnp.arange(L)
    index.value = index.value + L
    return positions_L
  if L > max_len:
    raise errors.UserError(f"Sequence of {L} tokens exceeds model.max_len={max_len}.")
  return jnp.arange(L)


def outputs(module, h_BxLxD, valid_BxL, embed, V, lm_head_bias=True):
  """The model's output from its final hidden states: a sequence classifier's logits (`module.pool`),
  or next-token logits through the token embedding (`module.tie_embeddings`) or an lm_head (Llama's
  has no bias)."""
  if module.pool != "none":
    return nn.Dense(module.num_outputs, name="head")(pooled(h_BxLxD, valid_BxL, module.pool))
  if module.tie_embeddings:
    return embed.attend(h_BxLxD.astype(jnp.float32))
  return dense(V, ("embed", "vocab"), nn.initializers.normal(0.02), None, "lm_head", lm_head_bias)(
      h_BxLxD).astype(jnp.float32)


def pooled(h_BxLxD, valid_BxL, pool):
  """One vector per sequence, float32: the mean over its real tokens, or its last real token (the only
  one that has seen the whole text in a causal model)."""
  if pool == "mean":
    w_BxL = valid_BxL.astype(jnp.float32)
    return jnp.einsum("bld,bl->bd", h_BxLxD.astype(jnp.float32), w_BxL) / jnp.maximum(w_BxL.sum(1), 1)[:, None]
  last_B = jnp.maximum(valid_BxL.sum(1) - 1, 0)
  return h_BxLxD[jnp.arange(h_BxLxD.shape[0]), last_B].astype(jnp.float32)


class SelfAttention(nn.Module):
  num_heads: int
  max_len: int
  causal: bool
  use_rope: bool
  out_init: nn.initializers.Initializer
  dropout: float = 0.0
  dtype: str = "float32"
  attention: str = "auto"  # the kernel: see models/attention.py

  @nn.compact
  def __call__(self, x_BxLxD, positions_L, valid_BxL, train, decode):
    D = x_BxLxD.shape[-1]
    H = self.num_heads
    qkv = dense(3 * D, ("embed", "heads"), nn.initializers.normal(0.02), self.dtype, "qkv")(x_BxLxD)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = einops.rearrange(qkv, "b l (three h k) -> three b l h k", three=3, h=H)
    if self.use_rope:
      q_BxLxHxK, k_BxLxHxK = rope(q_BxLxHxK, positions_L), rope(k_BxLxHxK, positions_L)
    masks = dict(keys_BxS=valid_BxL, causal=self.causal)
    if decode:  # append this call's keys and values at their positions; attend over the whole cache
      k_BxLxHxK, v_BxLxHxK, masks = cached(self, k_BxLxHxK, v_BxLxHxK, positions_L, self.max_len, self.causal)
    drop = nn.Dropout(self.dropout, deterministic=False) if train and self.dropout else None
    out_BxLxHxK = attend(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, implementation=self.attention, drop=drop, **masks)
    out_BxLxD = einops.rearrange(out_BxLxHxK, "b l h k -> b l (h k)")
    return dense(D, ("heads", "embed"), self.out_init, self.dtype, "out")(out_BxLxD)


class Block(nn.Module):
  num_heads: int
  mlp_dim: int
  max_len: int
  causal: bool
  use_rope: bool
  num_layers: int
  dropout: float = 0.0
  dtype: str = "float32"
  ln_epsilon: float = 1e-6
  attention: str = "auto"

  @nn.compact
  def __call__(self, x_BxLxD, positions_L, valid_BxL, train, decode):
    # Residual projections start smaller as depth grows (GPT-2): 0.02 / sqrt(2 * layers).
    out_init = nn.initializers.normal(0.02 / (2 * self.num_layers) ** 0.5)
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln_attn")(x_BxLxD)
    x_BxLxD = x_BxLxD + drop(SelfAttention(self.num_heads, self.max_len, self.causal, self.use_rope, out_init,
                                           self.dropout, self.dtype, self.attention, name="attn")(
        h, positions_L, valid_BxL, train, decode))
    h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln_mlp")(x_BxLxD)
    h = nn.gelu(dense(self.mlp_dim, ("embed", "mlp"), nn.initializers.normal(0.02), self.dtype, "mlp_in")(h))
    return x_BxLxD + drop(dense(x_BxLxD.shape[-1], ("mlp", "embed"), out_init, self.dtype, "mlp_out")(h))


class GPT(nn.Module):
  num_outputs: int = field(meaning='the vocabulary for language modelling; the classes when pool != "none"',
                                   range=at_least(1))
  vocab_size: int = field(0, "token ids; 0 = num_outputs (language modelling). The trainer fills it from the tokenizer",
                             at_least(0))
  num_layers: int = field(4, "layers (blocks) stacked", at_least(1))
  num_heads: int = field(4, "attention heads", at_least(1))
  dim: int = field(128, "model width D (embeddings and residual stream)", at_least(1))
  mlp_dim: int = field(0, "0 = 4 * dim", at_least(0))
  max_len: int = field(256, "longest sequence (context length)", at_least(1))
  positions: str = field("learned", "learned | rope")
  tie_embeddings: bool = field(True, "logits = h @ token_embeddingᵀ, no separate lm_head")
  causal: bool = field(True, "False: bidirectional (BERT)")
  pool: str = field("none", "none (per-token logits) | mean | last (sequence classification)")
  dropout: float = field(0.0, "dropout rate in training", FRACTION)
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")
  remat: str = field("none", "none | full | dots: recompute each block's activations (all, or all but matmul outputs) "
                             "in the backward pass: less memory, up to ~1/3 more compute (models/stack.py)")
  scan_layers: bool = field(False, "one nn.scan over the blocks (params block_stack/..., a leading layer axis): XLA "
                                   "compiles one block instead of num_layers; checkpoints convert between the layouts "
                                   "(models/stack.py)")
  attention: str = field("auto", "auto | xla | cudnn | einsum (models/attention.py)")
  ln_epsilon: float = field(1e-6, "flax's default; GPT-2 checkpoints use 1e-5", above(0))

  @nn.compact
  def __call__(self, tokens_BxL, train: bool = False, decode: bool = False):
    L = tokens_BxL.shape[1]
    V = self.vocab_size or self.num_outputs
    check_choices(positions=(self.positions, ("learned", "rope")), pool=(self.pool, ("none", "mean", "last")))
    if self.dim % self.num_heads:
      raise errors.UserError(f"model.dim={self.dim} must be divisible by model.num_heads={self.num_heads}.")
    positions_L = positions(self, L, self.max_len, decode)
    valid_BxL = tokens_BxL >= 0
    embed = nn.Embed(V, self.dim, embedding_init=named(nn.initializers.normal(0.02), "vocab", "embed"), name="embed")
    h_BxLxD = embed(jnp.maximum(tokens_BxL, 0)) * valid_BxL[..., None]
    if self.positions == "learned":
      pos_embed = self.param("pos_embed", named(nn.initializers.normal(0.02), None, "embed"), (self.max_len, self.dim))
      h_BxLxD = h_BxLxD + jnp.take(pos_embed, positions_L, axis=0)
    h_BxLxD = nn.Dropout(self.dropout, deterministic=not train)(h_BxLxD.astype(self.dtype))
    fields = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.dim, max_len=self.max_len,
                  causal=self.causal, use_rope=self.positions == "rope", num_layers=self.num_layers,
                  dropout=self.dropout, dtype=self.dtype, ln_epsilon=self.ln_epsilon, attention=self.attention)
    h_BxLxD = stack.blocks(Block, fields, self.num_layers, "block", scan=self.scan_layers, remat=self.remat)(
        h_BxLxD, positions_L, valid_BxL, train, decode)
    h_BxLxD = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln_final")(h_BxLxD)
    return outputs(self, h_BxLxD, valid_BxL, embed, V)


# Sizes by name. gpt_tiny is nanoGPT's shakespeare_char CPU recipe; gpt_small is GPT-2 small (124 M with
# its 50,257-token vocabulary); bert_* follow Turc et al. 2019 (tiny, mini, small) and Devlin et al. 2019.
register("gpt")(GPT)
register("gpt_tiny", num_layers=4, num_heads=4, dim=128, max_len=64)(GPT)
register("gpt_mini", num_layers=6, num_heads=6, dim=384, max_len=256)(GPT)
register("gpt_small", num_layers=12, num_heads=12, dim=768, max_len=1024)(GPT)
register("bert_tiny", num_layers=2, num_heads=2, dim=128, max_len=512, causal=False)(GPT)
register("bert_mini", num_layers=4, num_heads=4, dim=256, max_len=512, causal=False)(GPT)
register("bert_small", num_layers=4, num_heads=8, dim=512, max_len=512, causal=False)(GPT)
register("bert_base", num_layers=12, num_heads=12, dim=768, max_len=512, causal=False)(GPT)
