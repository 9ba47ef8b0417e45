"""Samples text from a trained language model.

  python -m bigmodel.generate --workdir=runs/shakespeare_char --prompt="ROMEO:" \\
      --max_new_tokens=200 --temperature=0.8 --top_k=40      # or --top_p=0.9, or --greedy

Reads the workdir's newest checkpoint, its config and its tokenizer. GPT models decode
with a KV cache (one position's work per token); once the context is full, the window
slides: the last max_len tokens are encoded afresh for each new token, as without a
cache. Other language models (lstm_lm) re-read the window for every token. The same
seed gives the same text.
"""
import functools
import inspect
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from bigmodel import checkpoint, models, sharding, tokenizers


def load(workdir):
  """(model, params, tokenizer) from a language-model training workdir."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a bigmodel.train workdir?")
  config = ml_collections.ConfigDict(json.load(open(path)))
  if config.loss != "lm_xent":
    raise ValueError(f"{workdir} trained a {config.model.name} with loss {config.loss!r}; "
                     "generation needs a language model (loss='lm_xent').")
  tok = tokenizers.load(workdir)
  model_config = {**config.model.to_dict(), "num_outputs": tok.vocab_size}
  if "vocab_size" in models.fields(config.model.name):
    model_config["vocab_size"] = tok.vocab_size
  model = models.build(model_config)
  params, _, _ = checkpoint.read_weights(workdir, sharding.replicated(sharding.make_mesh()))
  return model, params, tok


def sample_token(logits_BxV, rng, temperature, top_k, top_p):
  """Greedy at temperature 0; otherwise a draw from the softmax, cut to the top_k / top_p tokens."""
  if temperature == 0:
    return jnp.argmax(logits_BxV, -1).astype(jnp.int32)
  logits_BxV = logits_BxV.astype(jnp.float32) / temperature
  if top_k:
    kth_B1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_B1, -jnp.inf, logits_BxV)
  if top_p < 1:  # nucleus: the fewest most likely tokens whose probabilities sum to top_p
    sorted_BxV = jnp.sort(logits_BxV, -1)[:, ::-1]
    before_BxV = jnp.cumsum(jax.nn.softmax(sorted_BxV, -1), -1) - jax.nn.softmax(sorted_BxV, -1)
    cutoff_B1 = jnp.min(jnp.where(before_BxV < top_p, sorted_BxV, jnp.inf), -1, keepdims=True)
    logits_BxV = jnp.where(logits_BxV < cutoff_B1, -jnp.inf, logits_BxV)
  return jax.random.categorical(rng, logits_BxV).astype(jnp.int32)


# Jitted once per model and shape, across calls (flax modules hash by their fields).
_sample = jax.jit(sample_token, static_argnums=(2, 3, 4))


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, ids_BxL):
  return model.apply({"params": params}, ids_BxL)


def _last_logits(model, params, ids_BxL, bucket=32):
  """The next-token logits after ids_BxL, right-padded (-1) to a multiple of `bucket` so that a
  growing context compiles a few shapes, not one per length; a causal model cannot see the pads."""
  L = ids_BxL.shape[1]
  padded = -(-L // bucket) * bucket
  if getattr(model, "max_len", 0):
    padded = min(padded, model.max_len)
  ids_BxL = np.pad(ids_BxL, ((0, 0), (0, padded - L)), constant_values=-1)
  return _logits(model, params, ids_BxL)[:, L - 1]


@functools.partial(jax.jit, static_argnums=0)
def _extend(model, params, cache, ids_BxL):
  return model.apply({"params": params, "cache": cache}, ids_BxL, decode=True, mutable=["cache"])


def _supports_cache(model):
  return "decode" in inspect.signature(type(model).__call__).parameters


def generate(model, params, prompt_BxP, max_new_tokens, *, seed=0, temperature=1.0, top_k=0, top_p=1.0,
             use_cache=True):
  """Returns prompt_BxP followed by max_new_tokens sampled ids (a B x (P + new) int32 array)."""
  max_len = getattr(model, "max_len", None) or 1 << 30
  use_cache = use_cache and _supports_cache(model)
  tokens = np.asarray(prompt_BxP, np.int32)
  if tokens.ndim != 2 or tokens.shape[1] == 0:
    raise ValueError("The prompt must hold at least one token.")
  if use_cache:
    blank = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(tokens[:, :1].shape, jnp.int32),
                                              decode=True))["cache"]
    fresh_cache = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), blank)
  rng = jax.random.key(seed)
  cache, cached = None, 0  # cached: positions filled
  for i in range(max_new_tokens):
    if not use_cache:
      logits_BxV = _last_logits(model, params, tokens[:, -max_len:])
    else:
      if cache is None or cached == max_len:  # the prompt, or a full context: encode the window afresh
        cache, cached, new = fresh_cache(), 0, tokens[:, -max_len:]
      else:  # only the token sampled last
        new = tokens[:, -1:]
      logits_BxLxV, variables = _extend(model, params, cache, new)
      cache, cached = variables["cache"], cached + new.shape[1]
      logits_BxV = logits_BxLxV[:, -1]
    next_B = _sample(logits_BxV, jax.random.fold_in(rng, i), temperature, top_k, top_p)
    tokens = np.concatenate([tokens, np.asarray(next_B)[:, None]], axis=1)
  return tokens


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # orbax warns that the workdir opens read-only
  f = flags.FLAGS
  model, params, tok = load(f.workdir)
  prompt = tok.encode(f.prompt)
  temperature = 0.0 if f.greedy else f.temperature
  out = generate(model, params, np.tile(prompt, (f.num_samples, 1)), f.max_new_tokens, seed=f.seed,
                 temperature=temperature, top_k=f.top_k, top_p=f.top_p, use_cache=not f.no_cache)
  for i, ids in enumerate(out):
    if f.num_samples > 1:
      print(f"--- sample {i}")
    print(tok.decode(ids))


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A language-model training workdir.")
  flags.DEFINE_string("prompt", "\n", "Text to continue.")
  flags.DEFINE_integer("max_new_tokens", 200, "Tokens to sample after the prompt.")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 = greedy.")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens; 0 = all.")
  flags.DEFINE_float("top_p", 1.0, "Sample among the most likely tokens whose probabilities sum to top_p.")
  flags.DEFINE_bool("greedy", False, "Always take the most likely token.")
  flags.DEFINE_integer("seed", 0, "Sampling seed: the same seed gives the same text.")
  flags.DEFINE_integer("num_samples", 1, "Independent samples of the same prompt.")
  flags.DEFINE_bool("no_cache", False, "Recompute the whole context for each token (for checking the cache).")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
