"""Samples text from a trained language model.

  python -m bigmodel.generate --workdir=runs/shakespeare_char --prompt="ROMEO:" \\
      --max_new_tokens=200 --temperature=0.8 --top_k=40      # or --top_p=0.9, or --greedy

Reads the workdir's newest checkpoint, its config and its tokenizer (workdir.py). GPT models
decode with a KV cache (one position's work per token); once the context is full, the window
slides: the last max_len tokens are encoded afresh for each new token, as without a cache.
Other language models (lstm_lm) re-read the window for every token. Tokens are drawn by
sampling.py; the same seed gives the same text (sample i of --num_samples uses seed + i). A sample
ends at the tokenizer's end-of-text token if it has one (a checkpoint's: GPT-2's <|endoftext|>; not
a char, byte or BPE one), which is not printed; --ignore_eos goes on to --max_new_tokens.
"""
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from bigmodel import errors, sampling, tasks, workdir as workdir_lib


def load(workdir):
  """(model, params, tokenizer) from a language-model training workdir."""
  config = workdir_lib.read_config(workdir)
  task = tasks.get(config.task)
  if task.serves != "generate":
    raise errors.UserError(f"{workdir} trained a {config.model.name} for task {config.task!r}"
                           f"{'; ' + task.not_served if task.serves is None else ''}. Generation needs a language "
                           "model (task='language_model').")
  run = workdir_lib.load(workdir, config)
  return run.model, run.params, run.tokenizer


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, ids_BxL):
  return model.apply({"params": params}, ids_BxL)


@functools.partial(jax.jit, static_argnums=0)
def _extend(model, params, cache, ids_BxL):
  return model.apply({"params": params, "cache": cache}, ids_BxL, decode=True, mutable=["cache"])


class _NextLogits:
  """`sampling.generate`'s next_logits for a flax LM over rows that advance together: the rows of the
  first call. A row that has ended (at its end-of-text token) still runs, fed its last token again,
  so that the cache keeps one position for all; its logits are dropped."""

  def __init__(self, model, params, use_cache, bucket=32):
    self.model, self.params, self.bucket = model, params, bucket
    self.max_len = getattr(model, "max_len", None) or 1 << 30
    self.use_cache = use_cache and "decode" in inspect.signature(type(model).__call__).parameters
    self.cache, self.cached = None, 0  # cached: positions filled
    self.tokens = {}  # row -> its tokens so far, for every row of the first call

  def __call__(self, rows, tokens):
    rows = [int(r) for r in rows]
    self.tokens.update(zip(rows, tokens))
    longest = max(len(t) for t in self.tokens.values())
    ids_BxL = np.array([t + t[-1:] * (longest - len(t)) for t in self.tokens.values()], np.int32)[:, -self.max_len:]
    wanted = np.array([list(self.tokens).index(r) for r in rows])
    if not self.use_cache:
      return self._recompute(ids_BxL)[wanted]
    if self.cache is None or self.cached == self.max_len:  # the prompt, or a full context: encode afresh
      blank = jax.eval_shape(lambda: self.model.init(jax.random.key(0), jnp.zeros((len(ids_BxL), 1), jnp.int32),
                                                     decode=True))["cache"]
      self.cache, self.cached, new = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), blank), 0, ids_BxL
    else:  # only the token sampled last
      new = ids_BxL[:, -1:]
    logits_BxLxV, variables = _extend(self.model, self.params, self.cache, new)
    self.cache, self.cached = variables["cache"], self.cached + new.shape[1]
    return logits_BxLxV[wanted, -1]

  def _recompute(self, ids_BxL):
    """The next-token logits after ids_BxL, right-padded (-1) to a multiple of `bucket` so that a
    growing context compiles a few shapes, not one per length; a causal model cannot see the pads."""
    L = ids_BxL.shape[1]
    padded = min(-(-L // self.bucket) * self.bucket, self.max_len)
    ids_BxL = np.pad(ids_BxL, ((0, 0), (0, padded - L)), constant_values=-1)
    return _logits(self.model, self.params, ids_BxL)[:, L - 1]


def generate(model, params, prompt_BxP, max_new_tokens, *, seed=0, temperature=1.0, top_k=0, top_p=1.0,
             eos_id=None, use_cache=True):
  """Returns prompt_BxP followed by max_new_tokens sampled ids (a B x (P + new) int32 array).
  `seed` (and each setting) is one value or one per row. A row that draws `eos_id` (the tokenizer's
  end-of-text token; None: never stop) ends with it, and -1 (padding) fills the rest of the row."""
  tokens = np.asarray(prompt_BxP, np.int32)
  if tokens.ndim != 2 or tokens.shape[1] == 0:
    raise errors.UserError("The prompt must hold at least one token.")
  out = sampling.generate(_NextLogits(model, params, use_cache), tokens, max_new_tokens, seed=seed,
                          temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos_id)
  out_BxL = np.full((len(tokens), tokens.shape[1] + max_new_tokens), -1, np.int32)
  for row_L, ids in zip(out_BxL, out):
    row_L[:len(ids)] = ids
  return out_BxL


def text_ids(ids_L, prompt_len, eos_id):
  """A generated row's ids whose text is shown: those before the end-of-text token that ended it
  (neither its text nor the padding after it, as OpenAI's API leaves it out)."""
  new = np.asarray(ids_L[prompt_len:])
  ends = np.flatnonzero((new < 0) | (new == (-1 if eos_id is None else eos_id)))
  return ids_L[:prompt_len + (int(ends[0]) if len(ends) else len(new))]


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # orbax warns that the workdir opens read-only
  f = flags.FLAGS
  model, params, tok = load(f.workdir)
  prompt = tok.encode(f.prompt)
  temperature = 0.0 if f.greedy else f.temperature
  eos_id = None if f.ignore_eos else tok.eos_id
  out = generate(model, params, np.tile(prompt, (f.num_samples, 1)), f.max_new_tokens,
                 seed=f.seed + np.arange(f.num_samples), temperature=temperature, top_k=f.top_k, top_p=f.top_p,
                 eos_id=eos_id, use_cache=not f.no_cache)
  for i, ids in enumerate(out):
    if f.num_samples > 1:
      print(f"--- sample {i}")
    shown = text_ids(ids, len(prompt), eos_id)
    # The BOS a Llama's tokenizer puts before every text is not part of it: "ROMEO: ...", not "<s>ROMEO: ...".
    print(tok.decode(shown[1:] if len(shown) and shown[0] == getattr(tok, "bos_id", None) else shown))


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
  flags.DEFINE_bool("ignore_eos", False, "Go on past the tokenizer's end-of-text token (GPT-2's <|endoftext|>), "
                    "where a sample otherwise ends, to --max_new_tokens.")
  flags.DEFINE_bool("no_cache", False, "Recompute the whole context for each token (for checking the cache).")
  flags.mark_flags_as_required(["workdir"])
  errors.run(main)
