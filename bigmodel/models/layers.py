"""The layers every Transformer family here builds from (models/gpt.py, llama.py, bert.py): named
parameters for sharding, rotary positions, the output head (logits or a pooled classifier), and the
check of a model's string fields. The KV cache they decode with is bigmodel/kv_cache.py's.
"""
import flax.linen as nn
import jax.numpy as jnp

from bigmodel import errors, platform


def named(init, *axes):
  """An initializer whose parameter carries logical axis names, for sharding (see bigmodel/sharding.py)."""
  return nn.with_logical_partitioning(init, axes)


def dense(features, axes, init, dtype, name, bias=True):
  """nn.Dense with its kernel's and bias's axes named: `axes` = (input axis, output axis); its matmul is
  the platform's (on CPU, one with a faster kernel gradient: platform.dense_dot_general)."""
  return nn.Dense(features, use_bias=bias, dtype=dtype, kernel_init=named(init, *axes),
                  bias_init=named(nn.initializers.zeros, axes[1]), name=name,
                  dot_general=platform.dense_dot_general())


def rope(x_BxLxHxK, positions, freqs_K2=None):
  """Rotary position embedding (Su et al. 2021): rotate channel pairs by position-dependent angles. The
  pairs are (i, i + K/2), as Hugging Face's Llama and GPT-NeoX have them. `positions`: [L], the same for
  every row, or [B, L]. `freqs_K2`: one angle per position for each pair; the default is the paper's
  10000^(-2i/K) (models/llama.py scales them)."""
  K = x_BxLxHxK.shape[-1]
  if freqs_K2 is None:
    freqs_K2 = 1.0 / (10_000 ** (jnp.arange(0, K, 2) / K))
  angles = positions[..., None].astype(jnp.float32) * freqs_K2  # [L, K/2] or [B, L, K/2]
  sin, cos = jnp.sin(angles)[..., None, :], jnp.cos(angles)[..., None, :]  # a heads axis before the pairs
  x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x_BxLxHxK.dtype)


def check_choices(**fields):
  """A UserError for a model field (field=(value, known values)) set to a value it does not know."""
  for field, (value, known) in fields.items():
    if value not in known:
      raise errors.UserError(f"Unknown model.{field}={value!r}. Known: {', '.join(known)}.")


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
