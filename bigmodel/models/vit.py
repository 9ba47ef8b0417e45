"""Vision Transformer (Dosovitskiy et al. 2021).

Cut the image into P x P patches (einops), embed each linearly, add a learned
position embedding, prepend a class token (or not, and mean-pool instead), run the
pre-LayerNorm encoder blocks of `transformer.py`, classify. Sizes by name:
vit_ti, vit_s, vit_b (Touvron et al. 2021; Dosovitskiy et al. 2021). Hugging Face ViT
checkpoints load into it (bigmodel/huggingface/): at another image size their position
embeddings are interpolated in 2-D, as the paper does for fine-tuning at higher resolution.
"""
import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel import errors
from bigmodel.models import register, stack
from bigmodel.models.transformer import EncoderBlock
from bigmodel.registry import FRACTION, above, at_least, field


class ViT(nn.Module):
  num_outputs: int = field(meaning="classes, targets or vocabulary of the head; the trainer fills it from the dataset "
                                   "and loss", range=at_least(1))
  patch_size: int = field(16, "pixels per side of an image patch", at_least(1))
  dim: int = field(192, "D, the token width", at_least(1))
  num_layers: int = field(12, "layers (blocks) stacked", at_least(1))
  num_heads: int = field(3, "attention heads", at_least(1))
  mlp_dim: int = field(768, "hidden units of each block's MLP", at_least(0))
  pool: str = field("cls", "cls (a learned class token) | mean (average of the patch tokens)")
  dropout: float = field(0.0, "dropout rate in training", FRACTION)
  dtype: str = field("float32", "dtype of the computation (float32, bfloat16); parameters stay float32")
  remat: str = field("none", "none | full | dots: recompute activations in the backward pass (models/stack.py)")
  scan_layers: bool = field(False, "one nn.scan over the blocks (params block_stack/...): see models/stack.py")
  image_size: int = field(0, "resize inputs to image_size x image_size first (e.g. 28x28 to a multiple of 16); 0 = "
                             "keep", at_least(0))
  ln_epsilon: float = field(1e-6, "flax's default; Hugging Face ViT checkpoints use 1e-12", above(0))
  gelu_approximate: bool = field(True, "tanh approximation; False = exact erf (Hugging Face ViT checkpoints)")
  attention: str = field("auto", "auto | xla | cudnn | einsum (models/attention.py)")

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    if x_BxHxWxC.ndim == 3:
      x_BxHxWxC = x_BxHxWxC[..., None]
    if self.image_size:
      B, _, _, C = x_BxHxWxC.shape
      x_BxHxWxC = jax.image.resize(x_BxHxWxC.astype(jnp.float32), (B, self.image_size, self.image_size, C),
                                   "bilinear")
    _, H, W, _ = x_BxHxWxC.shape
    P = self.patch_size
    if H % P or W % P:
      raise errors.UserError(f"Image size {H}x{W} is not a multiple of model.patch_size={P}.")
    if self.pool not in ("cls", "mean"):
      raise errors.UserError(f"Unknown ViT pool {self.pool!r}. Known: cls, mean.")
    patches_BxNxPPC = einops.rearrange(x_BxHxWxC.astype(self.dtype), "b (h p) (w q) c -> b (h w) (p q c)", p=P, q=P)
    h_BxNxD = nn.Dense(self.dim, dtype=self.dtype, name="patch_embed")(patches_BxNxPPC)
    if self.pool == "cls":
      cls_1x1xD = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
      h_BxNxD = jnp.concatenate([jnp.broadcast_to(cls_1x1xD, (h_BxNxD.shape[0], 1, self.dim)).astype(self.dtype),
                                 h_BxNxD], axis=1)
    N = h_BxNxD.shape[1]
    pos_NxD = self.param("pos_embed", nn.initializers.normal(0.02), (N, self.dim))
    h_BxNxD = nn.Dropout(self.dropout, deterministic=not train)(h_BxNxD + pos_NxD.astype(self.dtype))
    fields = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout, dtype=self.dtype,
                  ln_epsilon=self.ln_epsilon, gelu_approximate=self.gelu_approximate, attention=self.attention)
    h_BxNxD = stack.blocks(EncoderBlock, fields, self.num_layers, "block", scan=self.scan_layers, remat=self.remat)(
        h_BxNxD, train)
    h_BxNxD = nn.LayerNorm(self.ln_epsilon, dtype=self.dtype, name="ln_final")(h_BxNxD)
    h_BxD = h_BxNxD[:, 0] if self.pool == "cls" else h_BxNxD.mean(axis=1)
    # Zero-init head, as in the paper: the first logits are uniform.
    return nn.Dense(self.num_outputs, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                    name="head")(h_BxD).astype(jnp.float32)


register("vit")(ViT)
register("vit_ti", dim=192, num_layers=12, num_heads=3, mlp_dim=768)(ViT)
register("vit_s", dim=384, num_layers=12, num_heads=6, mlp_dim=1536)(ViT)
register("vit_b", dim=768, num_layers=12, num_heads=12, mlp_dim=3072)(ViT)
