"""softmax(Q Kᵀ / √d) V for every attention layer (GPT, BERT, ViT, the sequence Transformer), in one place.

Queries, keys and values come in `jax.nn.dot_product_attention`'s layout: [batch, length, heads,
head_dim]. Keys and values may have fewer heads than the queries (grouped-query attention, Ainslie
et al. 2023): query head n then reads key/value head n // (query heads / key heads), as in
`jax.nn.dot_product_attention` and Hugging Face's `repeat_kv`. What may be attended is given
three ways, combined: `keys_BxS` (False = padding, a key
no query sees), `causal` (query i sees keys 0..i, both counted from position 0) and `mask_BxLxS`
(anything else, e.g. a KV cache whose queries start later than its keys).

`implementation` (config key `model.attention`) chooses the kernel:
  auto    cuDNN's fused flash attention on an NVIDIA GPU where it applies (bf16 or fp16, a head
          size it supports, not a one-token decode step), XLA's fused attention elsewhere;
          the einsum path wherever attention dropout is on (neither fused kernel takes it);
  xla     `jax.nn.dot_product_attention(implementation="xla")` on every platform;
  cudnn   cuDNN's, or an error naming why it cannot run here;
  einsum  two einsums and a float32 softmax written out: the path every model had before the
          fused ones, kept for comparison (tests/test_attention.py checks that they agree).
"""
import jax
import jax.numpy as jnp

from bigmodel import errors, platform

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "einsum")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def attend(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, *, implementation="auto", keys_BxS=None, causal=False,
              mask_BxLxS=None, drop=None):
  """The attention output, [batch, length, heads, head_dim]. `drop`, if given, is dropout applied to
  the attention probabilities (training with dropout > 0); only the einsum path has them to drop."""
  kernel = choose(implementation, q_BxLxHxK, k_BxSxHxK, dropout=drop is not None)
  if kernel == "einsum":
    group = q_BxLxHxK.shape[2] // k_BxSxHxK.shape[2]
    k_BxSxHxK, v_BxSxHxK = jnp.repeat(k_BxSxHxK, group, axis=2), jnp.repeat(v_BxSxHxK, group, axis=2)
    return _einsum(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, _combined(q_BxLxHxK, k_BxSxHxK, keys_BxS, causal, mask_BxLxS),
                   drop)
  masks = [m for m in (None if keys_BxS is None else keys_BxS[:, None, None, :],
                       None if mask_BxLxS is None else mask_BxLxS[:, None]) if m is not None]
  mask = masks[0] & masks[1] if len(masks) == 2 else masks[0] if masks else None
  if mask is not None and kernel == "cudnn":  # cuDNN takes a mask as a bias over every query and every key
    mask = jnp.broadcast_to(mask, (mask.shape[0], 1, q_BxLxHxK.shape[1], k_BxSxHxK.shape[1]))
  return jax.nn.dot_product_attention(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, mask=mask, is_causal=causal,
                                      implementation=kernel)


def choose(implementation, q_BxLxHxK, k_BxSxHxK, dropout=False):
  """The kernel that runs: "einsum", "xla" or "cudnn"; a UserError for one that cannot run here."""
  if implementation not in IMPLEMENTATIONS:
    raise errors.UserError(f"Unknown model.attention={implementation!r}. Known: {', '.join(IMPLEMENTATIONS)}.")
  if implementation == "einsum" or (implementation == "auto" and dropout):
    return "einsum"
  if dropout:
    raise errors.UserError(f"model.attention={implementation!r} has no attention dropout: set model.dropout=0, or "
                           "model.attention=auto (or einsum) to compute attention with it.")
  why_not = _why_not_cudnn(q_BxLxHxK, k_BxSxHxK)
  if implementation == "cudnn" and why_not:
    raise errors.UserError(f"model.attention='cudnn' cannot run here: {why_not}. Use model.attention=auto (cuDNN "
                           "where it applies, XLA elsewhere) or xla.")
  return "cudnn" if implementation == "cudnn" or (implementation == "auto" and not why_not) else "xla"


def _why_not_cudnn(q_BxLxHxK, k_BxSxHxK):
  """Why cuDNN's flash attention does not apply to these inputs here, or "" if it does."""
  _, L, _, K = q_BxLxHxK.shape
  S = k_BxSxHxK.shape[1]
  if not platform.nvidia_gpu():
    return f"it needs an NVIDIA GPU, and this is {jax.default_backend()}"
  if q_BxLxHxK.dtype not in CUDNN_DTYPES:
    return f"it computes in bfloat16 or float16, not {q_BxLxHxK.dtype} (set model.dtype=bfloat16)"
  if K % 8 or K > 128:  # cuDNN 9 takes up to 256 on Hopper; 128 holds on every GPU it supports
    return f"its head size must be a multiple of 8 up to 128, not {K}"
  if L == 1 or L % 2 or S % 2:  # the masks reach cuDNN as a bias, which needs even lengths
    return f"it needs even query and key lengths of at least 2 (here {L} and {S})"
  return ""


def _combined(q_BxLxHxK, k_BxSxHxK, keys_BxS, causal, mask_BxLxS):
  """The three masks as one [batch, length, keys] boolean, or None when everything is attended."""
  B, L, S = q_BxLxHxK.shape[0], q_BxLxHxK.shape[1], k_BxSxHxK.shape[1]
  mask = None if keys_BxS is None else jnp.broadcast_to(keys_BxS[:, None, :], (B, L, S))
  if causal:
    lower = jnp.tril(jnp.ones((L, S), bool))[None]
    mask = lower if mask is None else mask & lower
  if mask_BxLxS is not None:
    mask = mask_BxLxS if mask is None else mask & mask_BxLxS
  return mask


def _einsum(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxLxS, drop):
  dtype, K = q_BxLxHxK.dtype, q_BxLxHxK.shape[-1]
  logits_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, k_BxSxHxK) / jnp.sqrt(K).astype(dtype)
  if mask_BxLxS is not None:
    logits_BxHxLxS = jnp.where(mask_BxLxS[:, None], logits_BxHxLxS, jnp.finfo(logits_BxHxLxS.dtype).min)
  # Softmax in float32: bf16 exponentials lose too much precision.
  probs_BxHxLxS = jax.nn.softmax(logits_BxHxLxS.astype(jnp.float32), axis=-1).astype(dtype)
  if drop is not None:
    probs_BxHxLxS = drop(probs_BxHxLxS)
  return jnp.einsum("bhls,bshk->blhk", probs_BxHxLxS, v_BxSxHxK)
