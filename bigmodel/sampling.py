"""How tokens are drawn from a language model's logits, for the decode engine (decoding.py). jax only.

Token i of a row is drawn with the key fold_in(key(seed), i) of that row's seed, so a row's text
depends on its prompt, settings and seed alone, never on what else is in the batch.
"""
import jax
import jax.numpy as jnp


def sample(logits_BxV, key_B, temperature_B, top_k_B, top_p_B):
  """Per row: greedy at temperature 0; otherwise a draw from the softmax at that temperature, cut to
  the top_k most likely tokens (0 = all), then to the fewest whose probabilities sum to top_p."""
  V = logits_BxV.shape[-1]
  greedy_B = jnp.argmax(logits_BxV, -1)
  logits_BxV = logits_BxV.astype(jnp.float32) / jnp.where(temperature_B > 0, temperature_B, 1.0)[:, None]
  # Cutting sorts the vocabulary, which at GPT-2's 50,257 tokens costs more than a decode step
  # (benchmarks/RESULTS.md, Serving): skipped when no row cuts, where it would change nothing.
  cuts = jnp.any((top_k_B > 0) & (top_k_B < V)) | jnp.any(top_p_B < 1)
  logits_BxV = jax.lax.cond(cuts, _cut, lambda logits_BxV, *_: logits_BxV, logits_BxV, top_k_B, top_p_B)
  drawn_B = jax.vmap(jax.random.categorical)(key_B, logits_BxV)
  return jnp.where(temperature_B > 0, drawn_B, greedy_B).astype(jnp.int32)


def _cut(logits_BxV, top_k_B, top_p_B):
  """Logits below each row's top_k-th, then those outside its top_p, set to -inf."""
  V = logits_BxV.shape[-1]
  k_B = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, V), V)
  sorted_BxV = -jnp.sort(-logits_BxV, -1)
  kth_B1 = jnp.take_along_axis(sorted_BxV, k_B[:, None] - 1, -1)
  logits_BxV = jnp.where(logits_BxV < kth_B1, -jnp.inf, logits_BxV)
  sorted_BxV = jnp.where(sorted_BxV < kth_B1, -jnp.inf, sorted_BxV)  # the cut logits, still sorted
  probs_BxV = jax.nn.softmax(sorted_BxV, -1)
  before_BxV = jnp.cumsum(probs_BxV, -1) - probs_BxV  # probability of the more likely tokens
  cutoff_B1 = jnp.min(jnp.where(before_BxV < top_p_B[:, None], sorted_BxV, jnp.inf), -1, keepdims=True)
  return jnp.where((top_p_B[:, None] < 1) & (logits_BxV < cutoff_B1), -jnp.inf, logits_BxV)


def draw(logits_BxV, seed_B, step_B, temperature_B, top_k_B, top_p_B):
  """Token step_B of each row, drawn with the key fold_in(key(seed), step) of its seed."""
  key_B = jax.vmap(lambda seed, step: jax.random.fold_in(jax.random.key(seed), step))(seed_B, step_B)
  return sample(logits_BxV, key_B, temperature_B, top_k_B, top_p_B)


TOP_LOGPROBS = 5  # the most alternatives `logprobs` reports per token (OpenAI's limit too)


def logprobs(logits_BxV, token_B):
  """The model's log-probability of each row's token (at temperature 1, before any cut), and the
  TOP_LOGPROBS most likely tokens with theirs: (logprob_B, top_ids_BxK, top_logprobs_BxK)."""
  logprobs_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), -1)
  top_BxK, ids_BxK = jax.lax.top_k(logprobs_BxV, TOP_LOGPROBS)
  return jnp.take_along_axis(logprobs_BxV, token_B[:, None], -1)[:, 0], ids_BxK.astype(jnp.int32), top_BxK
