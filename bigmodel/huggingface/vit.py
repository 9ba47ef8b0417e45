"""ViT (`ViTModel`, `ViTForImageClassification`) <-> models/vit.py's ViT: the class token, exact GELU,
LayerNorm epsilon 1e-12; the patch convolution as a Dense over einops patches, the 2-D position grid
interpolated at another image size. Import only."""
import jax
import numpy as np

from bigmodel import errors
from bigmodel.huggingface.tensors import Tensors, dense, fused, norm, same
from bigmodel.models import vit

MODEL_TYPE = "vit"
ARCHITECTURES = ("ViTModel", "ViTForImageClassification")
MODEL = vit.ViT
PREFIX = "vit."


def model_config(hf, require):
  require("hidden_act", ("gelu",), "its MLP uses another activation")
  require("qkv_bias", (True,), "its query, key and value projections have no bias")
  return dict(name="vit", patch_size=hf["patch_size"], dim=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
              num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"], pool="cls",
              ln_epsilon=hf.get("layer_norm_eps", 1e-12), gelu_approximate=False)


def patches(name):
  """ViT's patch conv (D, C, P, P) as the Dense kernel over einops patches "(p q c)" (P * P * C, D). A
  3-channel (RGB) kernel loads into a 1-channel model summed over its channels: the same output as the
  grey image copied into R, G and B."""
  def load(a, shape):
    kernel_PxPxCxD = a[0].transpose(2, 3, 1, 0)
    P = kernel_PxPxCxD.shape[0]
    C = shape[0] // (P * P)
    if C == 1 and kernel_PxPxCxD.shape[2] != 1:
      kernel_PxPxCxD = kernel_PxPxCxD.sum(2, keepdims=True)
    return kernel_PxPxCxD.reshape(-1, kernel_PxPxCxD.shape[-1])
  return Tensors((name,), load, None)


def positions_2d(name):
  """ViT's position embeddings (1, 1 + N, D); at another image size the N patch positions are
  resized as a 2-D grid (bilinear, big_vision's choice), the class token's row kept."""
  def load(a, shape):
    pos_NxD = a[0][0]
    if pos_NxD.shape == tuple(shape):
      return pos_NxD
    old, new = round((pos_NxD.shape[0] - 1) ** 0.5), round((shape[0] - 1) ** 0.5)
    if old * old != pos_NxD.shape[0] - 1 or new * new != shape[0] - 1:
      raise errors.UserError(f"{name}: only square patch grids are interpolated ({pos_NxD.shape[0] - 1} -> "
                             f"{shape[0] - 1} patches).")
    grid = pos_NxD[1:].reshape(old, old, -1)
    grid = np.asarray(jax.image.resize(grid, (new, new, grid.shape[-1]), "bilinear"))
    return np.concatenate([pos_NxD[:1], grid.reshape(new * new, -1)])
  return Tensors((name,), load, lambda x: (x[None],))


def table(m):
  e = "vit.embeddings"
  t = {"params/patch_embed/kernel": patches(f"{e}.patch_embeddings.projection.weight"),
       "params/patch_embed/bias": same(f"{e}.patch_embeddings.projection.bias"),
       "params/cls": same(f"{e}.cls_token"), "params/pos_embed": positions_2d(f"{e}.position_embeddings"),
       **norm("ln_final", "vit.layernorm"), **dense("head", "classifier", head="classifier")}
  for i in range(m["num_layers"]):
    h = f"vit.encoder.layer.{i}"
    qkv = [f"{h}.attention.attention.{x}" for x in ("query", "key", "value")]
    t |= ({f"params/block{i}/attn/qkv/kernel": fused([f"{n}.weight" for n in qkv]),
           f"params/block{i}/attn/qkv/bias": fused([f"{n}.bias" for n in qkv], bias=True)} |
          dense(f"block{i}/attn/out", f"{h}.attention.output.dense") |
          norm(f"block{i}/ln_attn", f"{h}.layernorm_before") | norm(f"block{i}/ln_mlp", f"{h}.layernorm_after") |
          dense(f"block{i}/mlp_in", f"{h}.intermediate.dense") | dense(f"block{i}/mlp_out", f"{h}.output.dense"))
  return t
