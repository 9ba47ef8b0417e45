"""Llama (Touvron et al. 2023) and the decoders shaped like it: Mistral, Qwen2, SmolLM, TinyLlama.

tokens -> token embedding -> `num_layers` x [x + attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x))] -> RMSNorm
-> logits (a separate `lm_head`, or tied to the embedding).

What sets it apart from models/gpt.py's GPT-2 block: RMSNorm (Zhang & Sennrich 2019) instead of
LayerNorm; rotary positions (Su et al. 2021) with Llama's base `rope_theta` and, for Llama 3.1, its
long-context rescaling of the frequencies (`rope_scaling="llama3"`); the SwiGLU MLP (Shazeer 2020),
down(silu(gate(x)) * up(x)); grouped-query attention (Ainslie et al. 2023): `num_kv_heads` key/value
heads shared by the `num_heads` query heads; no biases, or q/k/v biases only (Qwen2: `qkv_bias`).

Token id -1 is padding, `decode=True` keeps a KV cache (of the key/value heads only; bigmodel/kv_cache.py), and `pool`
makes a sequence classifier, all as in the GPT; the blocks stack as every Transformer's do
(models/stack.py). Hugging Face checkpoints load through bigmodel/huggingface/llama.py.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigmodel import errors, kv_cache
from bigmodel.models import register, stack
from bigmodel.models.attention import attend
from bigmodel.models.layers import check_choices, dense, named, outputs, rope
from bigmodel.registry import FRACTION, above, at_least, field

ROPE_SCALINGS = ("none", "linear", "llama3")


def frequencies(K, theta, scaling="none", factor=1.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_len=8192):
  """RoPE's angle per position for each of the K/2 channel pairs: theta^(-2i/K), rescaled for a longer
  context. "linear" divides every one by `factor` (positions interpolated); "llama3" (Llama 3.1) divides
  only the low frequencies, those whose wavelength exceeds original_max_len / low_freq_factor, keeps the
  high ones above original_max_len / high_freq_factor, and blends in between."""
  freqs = 1.0 / theta ** (np.arange(0, K, 2, dtype=np.float32) / K)
  if scaling == "linear":
    return freqs / factor
  if scaling == "llama3":
    wavelength = 2 * np.pi / freqs
    scaled = np.where(wavelength > original_max_len / low_freq_factor, freqs / factor, freqs)
    smooth = (original_max_len / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    between = ((wavelength >= original_max_len / high_freq_factor) &
               (wavelength <= original_max_len / low_freq_factor))
    return np.where(between, (1 - smooth) * scaled / factor + smooth * scaled, scaled).astype(np.float32)
  return freqs


def default_mlp_dim(dim):
  """8/3 dim rounded up to a multiple of 64: the SwiGLU MLP with a 4 dim GELU MLP's parameters (Llama's rule)."""
  return -(-8 * dim // 192) * 64


class Attention(nn.Module):
  num_heads: int
  num_kv_heads: int
  head_dim: int
  max_len: int
  freqs: tuple  # RoPE's, one per channel pair (a tuple: module fields are hashed)
  out_init: nn.initializers.Initializer
  qkv_bias: bool = False
  out_bias: bool = False
  dtype: str = "float32"
  attention: str = "auto"

  @nn.compact
  def __call__(self, x_BxLxD, positions, keys, train, decode):
    """`positions`: each token's, [L] (every row alike) or [B, L] (packed rows); `keys`: which keys a query may
    see besides the causal rule, [B, S] (the real tokens) or [B, L, S] (packed rows: its own conversation's)."""
    del train  # Llama has no attention dropout
    H, G, K = self.num_heads, self.num_kv_heads, self.head_dim
    init = nn.initializers.normal(0.02)
    # Key and value heads carry their own axis name: fewer of them than query heads may not split as those do.
    q = dense(H * K, ("embed", "heads"), init, self.dtype, "q", self.qkv_bias)(x_BxLxD)
    k = dense(G * K, ("embed", "kv_heads"), init, self.dtype, "k", self.qkv_bias)(x_BxLxD)
    v = dense(G * K, ("embed", "kv_heads"), init, self.dtype, "v", self.qkv_bias)(x_BxLxD)
    split = lambda x, heads: x.reshape(*x.shape[:2], heads, K)
    freqs = jnp.asarray(self.freqs, jnp.float32)
    q_BxLxHxK, k_BxLxGxK = rope(split(q, H), positions, freqs), rope(split(k, G), positions, freqs)
    v_BxLxGxK = split(v, G)
    masks = dict(keys_BxS=keys, causal=True) if keys.ndim == 2 else dict(mask_BxLxS=keys, causal=True)
    if decode:
      k_BxLxGxK, v_BxLxGxK, masks = kv_cache.write(self, k_BxLxGxK, v_BxLxGxK, positions, self.max_len, True)
    out_BxLxHxK = attend(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, implementation=self.attention, **masks)
    return dense(x_BxLxD.shape[-1], ("heads", "embed"), self.out_init, self.dtype, "out", self.out_bias)(
        out_BxLxHxK.reshape(*out_BxLxHxK.shape[:2], H * K))


def packed_positions(segments_BxL):
  """Each token's position within its segment: 0 where a new segment starts (segments are contiguous)."""
  L = segments_BxL.shape[1]
  index_BxL = jnp.broadcast_to(jnp.arange(L), segments_BxL.shape)
  starts_BxL = jnp.concatenate([jnp.ones_like(segments_BxL[:, :1], bool),
                                segments_BxL[:, 1:] != segments_BxL[:, :-1]], axis=1)
  return index_BxL - jax.lax.cummax(jnp.where(starts_BxL, index_BxL, 0), axis=1)


class Block(nn.Module):
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  max_len: int
  freqs: tuple
  num_layers: int
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  dropout: float = 0.0
  dtype: str = "float32"
  norm_epsilon: float = 1e-5
  attention: str = "auto"

  @nn.compact
  def __call__(self, x_BxLxD, positions, keys, train, decode):
    D = x_BxLxD.shape[-1]
    out_init = nn.initializers.normal(0.02 / (2 * self.num_layers) ** 0.5)  # as the GPT's residual projections
    init = nn.initializers.normal(0.02)
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.RMSNorm(self.norm_epsilon, dtype=self.dtype, name="ln_attn")(x_BxLxD)
    x_BxLxD = x_BxLxD + drop(Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.max_len, self.freqs,
                                       out_init, self.qkv_bias, self.out_bias, self.dtype, self.attention,
                                       name="attn")(h, positions, keys, train, decode))
    h = nn.RMSNorm(self.norm_epsilon, dtype=self.dtype, name="ln_mlp")(x_BxLxD)
    gate = dense(self.mlp_dim, ("embed", "mlp"), init, self.dtype, "mlp_gate", self.mlp_bias)(h)
    up = dense(self.mlp_dim, ("embed", "mlp"), init, self.dtype, "mlp_in", self.mlp_bias)(h)
    return x_BxLxD + drop(dense(D, ("mlp", "embed"), out_init, self.dtype, "mlp_out", self.mlp_bias)(
        nn.silu(gate) * up))


class Llama(nn.Module):
  num_outputs: int = field(meaning='the vocabulary for language modelling; the classes when pool != "none"',
                                   range=at_least(1))
  vocab_size: int = field(0, "token ids; 0 = num_outputs. The trainer fills it from the tokenizer", at_least(0))
  num_layers: int = field(4, "layers (blocks) stacked", at_least(1))
  num_heads: int = field(4, "query heads", at_least(1))
  num_kv_heads: int = field(0, "key/value heads, dividing num_heads: fewer is grouped-query attention; 0 = num_heads",
                               at_least(0))
  dim: int = field(128, "model width D (embeddings and residual stream)", at_least(1))
  head_dim: int = field(0, "0 = dim // num_heads (Llama's); some checkpoints set another", at_least(0))
  mlp_dim: int = field(0, "0 = default_mlp_dim(dim)", at_least(0))
  max_len: int = field(256, "longest sequence (context length; the KV cache's length)", at_least(1))
  rope_theta: float = field(10_000.0, "RoPE's base: 10,000 (Llama 2), 500,000 (Llama 3), 1,000,000 (Qwen2)", above(0))
  rope_scaling: str = field("none", "none | linear | llama3: the frequencies rescaled for a longer context "
                                    "(frequencies())")
  rope_factor: float = field(1.0, "linear and llama3: how much longer", above(0))
  rope_low_freq_factor: float = field(1.0, "llama3's", above(0))
  rope_high_freq_factor: float = field(4.0, "llama3's", above(0))
  rope_original_max_len: int = field(8192, "llama3's: the context the model was pretrained with", at_least(1))
  norm_epsilon: float = field(1e-5, "RMSNorm's", above(0))
  tie_embeddings: bool = field(False, "logits = h @ token_embeddingᵀ (SmolLM, Qwen2 0.5B), or a separate lm_head")
  qkv_bias: bool = field(False, "biases on the query, key and value projections (Qwen2)")
  out_bias: bool = field(False, "a bias on the attention output projection (Llama's attention_bias sets both)")
  mlp_bias: bool = field(False, "biases on the MLP's projections")
  pool: str = field("none", "none (per-token logits) | mean | last (sequence classification)")
  dropout: float = field(0.0, "on the residual branches (Llama pretrains without)", FRACTION)
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")
  remat: str = field("none", "none | full | dots, as the GPT's (models/stack.py)")
  scan_layers: bool = field(False, "one nn.scan over the blocks, as the GPT's (models/stack.py)")
  attention: str = field("auto", "auto | xla | cudnn | einsum (models/attention.py)")
  decodes = True  # takes decode=True: keeps a KV cache (bigmodel/kv_cache.py). Not a field.

  @nn.compact
  def __call__(self, tokens_BxL, train: bool = False, decode: bool = False, segments_BxL=None):
    """`segments_BxL` (a packed batch, data.pack): which conversation of its row each token belongs to (1, 2, ...;
    0: padding). A token then sees only its own conversation's earlier tokens, and positions restart at 0 at
    each conversation's first token, so each conversation is computed as if it were alone in its row."""
    L = tokens_BxL.shape[1]
    V = self.vocab_size or self.num_outputs
    G = self.num_kv_heads or self.num_heads
    K = self.head_dim or self.dim // self.num_heads
    check_choices(rope_scaling=(self.rope_scaling, ROPE_SCALINGS), pool=(self.pool, ("none", "mean", "last")))
    if self.num_heads % G:
      raise errors.UserError(f"model.num_kv_heads={G} must divide model.num_heads={self.num_heads}: each key/value "
                             "head serves a group of query heads.")
    if not self.head_dim and self.dim % self.num_heads:
      raise errors.UserError(f"model.dim={self.dim} must be divisible by model.num_heads={self.num_heads} (or set "
                             "model.head_dim).")
    if K % 2:
      raise errors.UserError(f"The head size {K} must be even: rotary positions turn channel pairs.")
    positions = kv_cache.positions(self, L, self.max_len, decode)
    valid_BxL = tokens_BxL >= 0
    keys = valid_BxL
    if segments_BxL is not None:
      if decode or self.pool != "none":
        raise errors.UserError("Packed rows (data.pack) are for training a language model: not with a KV cache "
                               "or model.pool.")
      valid_BxL = valid_BxL & (segments_BxL > 0)
      keys = (segments_BxL[:, :, None] == segments_BxL[:, None, :]) & valid_BxL[:, None, :]
      positions = packed_positions(segments_BxL)
    embed = nn.Embed(V, self.dim, embedding_init=named(nn.initializers.normal(0.02), "vocab", "embed"), name="embed")
    h_BxLxD = (embed(jnp.maximum(tokens_BxL, 0)) * valid_BxL[..., None]).astype(self.dtype)
    freqs = frequencies(K, self.rope_theta, self.rope_scaling, self.rope_factor, self.rope_low_freq_factor,
                        self.rope_high_freq_factor, self.rope_original_max_len)
    fields = dict(num_heads=self.num_heads, num_kv_heads=G, head_dim=K,
                  mlp_dim=self.mlp_dim or default_mlp_dim(self.dim), max_len=self.max_len,
                  freqs=tuple(float(f) for f in freqs), num_layers=self.num_layers,
                  qkv_bias=self.qkv_bias, out_bias=self.out_bias, mlp_bias=self.mlp_bias, dropout=self.dropout,
                  dtype=self.dtype, norm_epsilon=self.norm_epsilon, attention=self.attention)
    h_BxLxD = stack.blocks(Block, fields, self.num_layers, "block", scan=self.scan_layers, remat=self.remat)(
        h_BxLxD, positions, keys, train, decode)
    h_BxLxD = nn.RMSNorm(self.norm_epsilon, dtype=self.dtype, name="ln_final")(h_BxLxD)
    return outputs(self, h_BxLxD, valid_BxL, embed, V, lm_head_bias=False)


# Sizes by name, from the model cards: TinyLlama-1.1B (Zhang et al. 2024), SmolLM2-135M and -360M (Allal et
# al. 2025), Llama-3.2-1B and Llama-3-8B (Meta 2024). llama_tiny is a CPU-sized one for characters.
register("llama")(Llama)
register("llama_tiny", num_layers=4, num_heads=4, num_kv_heads=2, dim=128, max_len=64)(Llama)
register("smollm2_135m", num_layers=30, num_heads=9, num_kv_heads=3, dim=576, mlp_dim=1536, max_len=8192,
         rope_theta=100_000.0, tie_embeddings=True)(Llama)
register("smollm2_360m", num_layers=32, num_heads=15, num_kv_heads=5, dim=960, mlp_dim=2560, max_len=8192,
         rope_theta=100_000.0, tie_embeddings=True)(Llama)
register("tinyllama_1b", num_layers=22, num_heads=32, num_kv_heads=4, dim=2048, mlp_dim=5632, max_len=2048)(Llama)
register("llama3_1b", num_layers=16, num_heads=32, num_kv_heads=8, dim=2048, head_dim=64, mlp_dim=8192,
         max_len=131_072, rope_theta=500_000.0, rope_scaling="llama3", rope_factor=32.0, tie_embeddings=True)(Llama)
register("llama3_8b", num_layers=32, num_heads=32, num_kv_heads=8, dim=4096, mlp_dim=14336, max_len=8192,
         rope_theta=500_000.0)(Llama)
