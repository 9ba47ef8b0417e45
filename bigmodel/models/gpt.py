"""GPT (Radford et al. 2018/2019) and the BERT-style encoder: one Transformer over tokens.

tokens -> token embedding (+ learned positions, or rotary positions inside attention)
-> dropout -> `num_layers` x [x + attn(LN(x)); x + MLP(LN(x))] -> LN -> logits over the
vocabulary (tied to the token embedding, or a separate `lm_head`).

`causal=True` is GPT: position i attends to positions <= i. `causal=False` is the BERT
encoder, trained with masked-LM. `pool="mean"` or `"last"` turns either into a sequence
classifier: the hidden states are pooled and a fresh `head` maps them to classes; every
other parameter keeps its name, so a pretrained LM loads into the classifier by path.

Token id -1 is padding: it is embedded as zeros, never attended to, and left out of pools.
With `decode=True` the keys and values of past positions live in the KV cache (bigmodel/kv_cache.py),
so generating a token costs one position's work (see bigmodel/decoding.py).
"""
import einops
import flax.linen as nn
import jax.numpy as jnp

from bigmodel import errors, kv_cache
from bigmodel.models import register, stack
from bigmodel.models.attention import attend
from bigmodel.models.layers import check_choices, dense, named, outputs, rope
from bigmodel.registry import FRACTION, above, at_least, field


class SelfAttention(nn.Module):
  num_heads: int
  max_len: int
  causal: bool
  use_rope: bool
  out_init: nn.initializers.Initializer
  dropout: float = 0.0
  dtype: str = "float32"
  attention: str = "auto"  # the kernel: see models/attention.py
  use_bias: bool = True

  @nn.compact
  def __call__(self, x_BxLxD, positions_L, valid_BxL, train, decode):
    D = x_BxLxD.shape[-1]
    H = self.num_heads
    qkv = dense(3 * D, ("embed", "heads"), nn.initializers.normal(0.02), self.dtype, "qkv", self.use_bias)(x_BxLxD)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = einops.rearrange(qkv, "b l (three h k) -> three b l h k", three=3, h=H)
    if self.use_rope:
      q_BxLxHxK, k_BxLxHxK = rope(q_BxLxHxK, positions_L), rope(k_BxLxHxK, positions_L)
    masks = dict(keys_BxS=valid_BxL, causal=self.causal)
    if decode:  # append this call's keys and values at their positions; attend over the whole cache
      k_BxLxHxK, v_BxLxHxK, masks = kv_cache.write(self, k_BxLxHxK, v_BxLxHxK, positions_L, self.max_len, self.causal)
    drop = nn.Dropout(self.dropout, deterministic=False) if train and self.dropout else None
    out_BxLxHxK = attend(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, implementation=self.attention, drop=drop, **masks)
    out_BxLxD = einops.rearrange(out_BxLxHxK, "b l h k -> b l (h k)")
    return dense(D, ("heads", "embed"), self.out_init, self.dtype, "out", self.use_bias)(out_BxLxD)


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
  use_bias: bool = True

  @nn.compact
  def __call__(self, x_BxLxD, positions_L, valid_BxL, train, decode):
    # Residual projections start smaller as depth grows (GPT-2): 0.02 / sqrt(2 * layers).
    out_init = nn.initializers.normal(0.02 / (2 * self.num_layers) ** 0.5)
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    norm = lambda name: nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, use_bias=self.use_bias, name=name)
    h = norm("ln_attn")(x_BxLxD)
    x_BxLxD = x_BxLxD + drop(SelfAttention(self.num_heads, self.max_len, self.causal, self.use_rope, out_init,
                                           self.dropout, self.dtype, self.attention, self.use_bias, name="attn")(
        h, positions_L, valid_BxL, train, decode))
    h = norm("ln_mlp")(x_BxLxD)
    h = nn.gelu(dense(self.mlp_dim, ("embed", "mlp"), nn.initializers.normal(0.02), self.dtype, "mlp_in",
                      self.use_bias)(h))
    return x_BxLxD + drop(dense(x_BxLxD.shape[-1], ("mlp", "embed"), out_init, self.dtype, "mlp_out",
                                self.use_bias)(h))


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
  use_bias: bool = field(True, "biases in the dense layers and layer norms; False is nanoGPT's bias=False (no GPT-2 "
                               "export)")
  decodes = True  # takes decode=True: keeps a KV cache (bigmodel/kv_cache.py). Not a field.

  @nn.compact
  def __call__(self, tokens_BxL, train: bool = False, decode: bool = False):
    L = tokens_BxL.shape[1]
    V = self.vocab_size or self.num_outputs
    check_choices(positions=(self.positions, ("learned", "rope")), pool=(self.pool, ("none", "mean", "last")))
    if self.dim % self.num_heads:
      raise errors.UserError(f"model.dim={self.dim} must be divisible by model.num_heads={self.num_heads}.")
    positions_L = kv_cache.positions(self, L, self.max_len, decode)
    valid_BxL = tokens_BxL >= 0
    embed = nn.Embed(V, self.dim, embedding_init=named(nn.initializers.normal(0.02), "vocab", "embed"), name="embed")
    h_BxLxD = embed(jnp.maximum(tokens_BxL, 0)) * valid_BxL[..., None]
    if self.positions == "learned":
      pos_embed = self.param("pos_embed", named(nn.initializers.normal(0.02), None, "embed"), (self.max_len, self.dim))
      h_BxLxD = h_BxLxD + jnp.take(pos_embed, positions_L, axis=0)
    h_BxLxD = nn.Dropout(self.dropout, deterministic=not train)(h_BxLxD.astype(self.dtype))
    fields = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.dim, max_len=self.max_len,
                  causal=self.causal, use_rope=self.positions == "rope", num_layers=self.num_layers,
                  dropout=self.dropout, dtype=self.dtype, ln_epsilon=self.ln_epsilon, attention=self.attention,
                  use_bias=self.use_bias)
    h_BxLxD = stack.blocks(Block, fields, self.num_layers, "block", scan=self.scan_layers, remat=self.remat)(
        h_BxLxD, positions_L, valid_BxL, train, decode)
    h_BxLxD = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, use_bias=self.use_bias, name="ln_final")(h_BxLxD)
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
