"""Transformer encoder classifier (Vaswani et al. 2017, pre-LayerNorm variant).

A scalar sequence (B, L) or feature sequence (B, L, F) is cut into tokens of
`patch_size` consecutive positions (as ViT does with image patches), linearly embedded, given a learned position embedding, passed
through `num_layers` blocks of self-attention and MLP, mean-pooled, classified.
"""
import einops
import flax.linen as nn
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register
from bigmodel.models.attention import attend
from bigmodel.registry import FRACTION, at_least, field


class MultiHeadAttention(nn.Module):
  """softmax(Q Kᵀ / √d) V over `num_heads` heads of size `head_dim`."""
  num_heads: int
  head_dim: int
  dtype: str = "float32"
  attention: str = "auto"  # the kernel: see models/attention.py

  @nn.compact
  def __call__(self, x_BxLxD, mask_BxLxL=None):
    H, K = self.num_heads, self.head_dim
    qkv_BxLx3HK = nn.Dense(3 * H * K, dtype=self.dtype, name="qkv")(x_BxLxD)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = einops.rearrange(qkv_BxLx3HK, "b l (three h k) -> three b l h k", three=3, h=H)
    out_BxLxHxK = attend(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, implementation=self.attention, mask_BxLxS=mask_BxLxL)
    out_BxLxHK = einops.rearrange(out_BxLxHxK, "b l h k -> b l (h k)")
    return nn.Dense(x_BxLxD.shape[-1], dtype=self.dtype, name="out")(out_BxLxHK)


class EncoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: str = "float32"
  ln_epsilon: float = 1e-6
  gelu_approximate: bool = True  # tanh approximation; False = the exact erf form (BERT, ViT checkpoints)
  attention: str = "auto"

  @nn.compact
  def __call__(self, x_BxLxD, train: bool):
    D = x_BxLxD.shape[-1]
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln_attn")(x_BxLxD)
    x_BxLxD = x_BxLxD + drop(MultiHeadAttention(self.num_heads, D // self.num_heads, self.dtype, self.attention,
                                                name="attn")(h))
    h = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln_mlp")(x_BxLxD)
    h = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_in")(h), approximate=self.gelu_approximate)
    return x_BxLxD + drop(nn.Dense(D, dtype=self.dtype, name="mlp_out")(h))


@register("transformer")
class TransformerClassifier(nn.Module):
  num_outputs: int = field(meaning="classes, targets or vocabulary of the head; the trainer fills it from the dataset "
                                   "and loss", range=at_least(1))
  num_layers: int = field(2, "layers (blocks) stacked", at_least(1))
  num_heads: int = field(4, "attention heads", at_least(1))
  dim: int = field(64, "model width D (embeddings and residual stream)", at_least(1))
  mlp_dim: int = field(128, "hidden units of each block's MLP", at_least(0))
  dropout: float = field(0.0, "dropout rate in training", FRACTION)
  max_len: int = field(512, "most tokens a sequence may have", at_least(1))
  patch_size: int = field(1, "input positions per token", at_least(1))
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")
  attention: str = field("auto", "auto | xla | cudnn | einsum (models/attention.py)")

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.dim % self.num_heads:
      raise errors.UserError(f"transformer dim={self.dim} must be divisible by num_heads={self.num_heads}.")
    x_BxSxF = x[..., None] if x.ndim == 2 else x
    if x_BxSxF.shape[1] % self.patch_size:
      raise errors.UserError(f"Sequence length {x_BxSxF.shape[1]} is not a multiple of patch_size={self.patch_size}.")
    x_BxLxF = einops.rearrange(x_BxSxF, "b (l p) f -> b l (p f)", p=self.patch_size)
    L = x_BxLxF.shape[1]
    if L > self.max_len:
      raise errors.UserError(f"Sequence length {L} exceeds model.max_len={self.max_len}.")
    h_BxLxD = nn.Dense(self.dim, dtype=self.dtype, name="embed")(x_BxLxF.astype(self.dtype))
    pos_LxD = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, self.dim))[:L]
    h_BxLxD = h_BxLxD + pos_LxD.astype(self.dtype)
    for i in range(self.num_layers):
      h_BxLxD = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, self.dtype, attention=self.attention,
                             name=f"block{i}")(h_BxLxD, train)
    h_BxD = nn.LayerNorm(dtype=self.dtype, name="ln_final")(h_BxLxD).mean(axis=1)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(h_BxD).astype(jnp.float32)
