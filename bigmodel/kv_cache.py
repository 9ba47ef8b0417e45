"""The KV cache: how a language model keeps the keys and values of past positions, so that a token
costs one position's work. The contract between the models that write it (models/gpt.py, llama.py),
the decode engine (decoding.py), the export (export.py) and the exported model (artifact.py); jax only.

A model that decodes says so (`decodes = True` on its class) and takes `decode=True` in `__call__`.
Inside it, the flax collection COLLECTION holds, for each attention layer, KEY and VALUE arrays of
batch x positions x heads x head size (a layer axis first when the layers are scanned): positions are
the third axis from the end (POSITIONS_AXIS) and number the model's `max_len`; and at its top INDEX,
the one position where the next call's tokens start, for the whole batch.

Outside the model (decoding.functions and what it exports) the cache is the list of those arrays
without INDEX (`flatten`, jax's tree order): one row's arrays, any number of positions, each row at
its own position passed beside them. Decode takes (weights..., cache..., token_B, position_B).
"""
import jax
import jax.numpy as jnp

from bigmodel import errors

COLLECTION, KEY, VALUE, INDEX = "cache", "key", "value", "index"
POSITIONS_AXIS = -3  # batch x positions x heads x head size, after a layer axis if the layers are scanned
AFTER_CACHE = 2  # decode's arguments after the cache: token_B, position_B


def decodes(model):
  """Whether a flax model decodes with a KV cache (its class says `decodes = True`)."""
  return getattr(type(model), "decodes", False)


def positions(module, L, max_len, decode):
  """The positions of this call's L tokens: 0..L-1, or with `decode` those after the last call's (INDEX
  keeps the count)."""
  if decode:
    index = module.variable(COLLECTION, INDEX, lambda: jnp.array(0, jnp.int32))
    positions_L = index.value + jnp.arange(L)
    index.value = index.value + L
    return positions_L
  if L > max_len:
    raise errors.UserError(f"Sequence of {L} tokens exceeds model.max_len={max_len}.")
  return jnp.arange(L)


def write(module, k_BxLxHxK, v_BxLxHxK, positions_L, max_len, causal):
  """(keys, values, masks for `attend`) of a decode step: this call's keys and values written into the
  module's cache at their positions, and the whole cache attended over."""
  B, _, H, K = k_BxLxHxK.shape
  k_cache = module.variable(COLLECTION, KEY, jnp.zeros, (B, max_len, H, K), k_BxLxHxK.dtype)
  v_cache = module.variable(COLLECTION, VALUE, jnp.zeros, (B, max_len, H, K), v_BxLxHxK.dtype)
  start = positions_L[0]
  k_cache.value = jax.lax.dynamic_update_slice(k_cache.value, k_BxLxHxK, (0, start, 0, 0))
  v_cache.value = jax.lax.dynamic_update_slice(v_cache.value, v_BxLxHxK, (0, start, 0, 0))
  # The queries start at `start`, the keys at 0: causality is by position, and the slots not written
  # yet lie past every query's position (past the last one's, without causality). A cache passed in
  # may hold fewer than max_len positions (the server attends over a bucket of them).
  last_L = positions_L if causal else jnp.full_like(positions_L, positions_L[-1])
  mask_BxLxS = (jnp.arange(k_cache.value.shape[1])[None, :] <= last_L[:, None])[None]
  return k_cache.value, v_cache.value, dict(mask_BxLxS=mask_BxLxS)


def flatten(cache):
  """(arrays, treedef) of a model's cache collection without INDEX: the cache as decode passes it."""
  return jax.tree.flatten({k: v for k, v in cache.items() if k != INDEX})


def unflatten(treedef, arrays, index):
  """The model's cache collection from `flatten`'s arrays, its tokens starting at position `index`."""
  return {**jax.tree.unflatten(treedef, arrays), INDEX: index}


def with_positions(shape, n):
  """A cache array's shape holding `n` positions instead."""
  return (*shape[:POSITIONS_AXIS], n, *shape[POSITIONS_AXIS + 1:])


def rows_in_decode_args(in_avals, num_weights):
  """One row's cache arrays (no batch axis) from the arguments of a decode function (an exported one's)."""
  return [jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in in_avals[num_weights:len(in_avals) - AFTER_CACHE]]
