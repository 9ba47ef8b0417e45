"""The decode engine: a language model's prompt prefilled into a KV cache, the decode step over
that cache, and what happens at the end of the context. bigmodel.generate (a trained flax model),
the artifact (the same functions, exported) and the server (through batching.Generator) all decode here.

A language model decodes through two functions of its weights (a list of arrays), the cache their
explicit input and output (a list of arrays, rows x ... x positions x heads x head size: bigmodel/kv_cache.py):

    prefill(weights, ids_BxL) -> (logits_BxLxV, cache)   every row from position 0; -1 pads on the right
    decode(weights, cache, token_B, position_B) -> (logits_BxV, cache)   one token per row, at its position

`functions` makes them from a flax model; export.py serialises them, and artifact.py reads them back.
A model without a KV cache (lstm_lm) has only prefill, which then runs again for every token.

`Decoder` holds the functions, the weights and the buckets they run in; `Slots` is rows of the cache
that decode together, each at its own position, which a sequence joins and leaves at any token;
`generate` decodes a batch of prompts through them. Token i of a row is sampling.draw's step i of
its seed, so a row's text depends on its prompt, settings and seed alone.

At the end of the context (a row's last token has no position left to be fed at), a row either
ends (`slide=False`: the server and the artifact, which report it as finish_reason "length") or
slides (`slide=True`: bigmodel.generate): its last `context` tokens are prefilled afresh for each
further token, which is what recomputing the window without a cache gives.
"""
import collections
import functools
import threading
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel import errors, kv_cache, sampling

Token = collections.namedtuple("Token", "id logprob top_ids top_logprobs")  # top_*: sampling.TOP_LOGPROBS


@functools.lru_cache(maxsize=16)  # the same functions for the same model, so that jit compiles them once
def functions(model, treedef, use_cache=True):
  """A flax language model's (prefill, decode, cache_avals): the functions above, over the weights
  flattened by `treedef`, and one row's cache arrays (their positions the model's context). Without
  a cache (`use_cache=False`, or a model that has none) decode is None and the cache is empty.

  The model's cache keeps one position for its whole batch, so each row runs alone under vmap: rows
  at different positions decode together. A right pad's keys land beyond the prompt, where decoding
  overwrites them before any query can see them."""
  if not (use_cache and kv_cache.decodes(model)):
    return lambda weights, ids_BxL: (model.apply(jax.tree.unflatten(treedef, weights), ids_BxL), []), None, ()
  blank = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), decode=True))
  # The model's one position for its batch is left out: decode takes one per row instead.
  cache_avals, cache_def = kv_cache.flatten(blank[kv_cache.COLLECTION])

  def run(weights, cache, position, ids_1xL):
    variables = {**jax.tree.unflatten(treedef, weights),
                 kv_cache.COLLECTION: kv_cache.unflatten(cache_def, cache, position)}
    logits_1xLxV, variables = model.apply(variables, ids_1xL, decode=True, mutable=[kv_cache.COLLECTION])
    return logits_1xLxV[0], kv_cache.flatten(variables[kv_cache.COLLECTION])[0]

  def prefill(weights, ids_BxL):
    empty = [jnp.zeros(kv_cache.with_positions(a.shape, ids_BxL.shape[1]), a.dtype) for a in cache_avals]
    return jax.vmap(lambda ids_L: run(weights, empty, jnp.int32(0), ids_L[None]))(ids_BxL)

  def decode(weights, cache, token_B, position_B):
    logits_Bx1xV, cache = jax.vmap(lambda c, t, p: run(weights, c, p, t[None, None]))(cache, token_B, position_B)
    return logits_Bx1xV[:, 0], cache

  return prefill, decode, tuple(cache_avals)


def bucket(n, sizes):
  """The smallest size >= n (sizes sorted)."""
  return next(s for s in sizes if s >= n)


@functools.lru_cache(maxsize=16)
def _jitted(prefill, decode):
  """`_start` and `_step` over these functions, jitted (once per pair), the cache donated."""
  start = jax.jit(functools.partial(_start, prefill), donate_argnums=1, static_argnames="echo")
  return start, decode and jax.jit(functools.partial(_step, decode), donate_argnums=1, static_argnames="length")


class Decoder:
  """A language model's prefill and decode (see above) with its weights, its `context` (positions),
  and the buckets they run in: `batch_sizes` rows (Slots adds its own number), and `lengths`
  positions (default 16, 32, ... below the context; the context is added). `cache_avals`: one row's
  cache arrays, any number of positions."""

  def __init__(self, prefill, decode, weights, cache_avals, context, batch_sizes=(1, 8, 32), lengths=()):
    if any(not 1 <= n <= context for n in lengths):
      raise errors.UserError(f"Lengths must be in [1, {context}] (the model's context), got {lengths}.")
    self.weights, self.cache_avals, self.context, self.batch_sizes = weights, cache_avals, context, batch_sizes
    self.lengths = sorted({*(lengths or [2 ** i for i in range(4, context.bit_length())]), context})
    self.start, self.step = _jitted(prefill, decode)
    # Buckets compiled ahead of their first use (by `Slots.warmup`): once there are any, a bucket not among
    # them runs in a larger one that is. Before, every bucket compiles on first use (jit's own cache).
    self.compiled, self.warming = set(), False  # of (slots, kind, rows, length)
    self._compiling, self._compiling_lock = collections.defaultdict(threading.Lock), threading.Lock()


def _start(prefill, weights, cache, slot, ids_1xL, last, seed, step, temperature, top_k, top_p, *, echo):
  """A prompt prefilled into row `slot` of the cache (its first L positions; those after hold an
  earlier row's keys, which no query sees before they are overwritten): (cache, the token drawn
  after it (as token `step` of the row), that token's logprobs, and with `echo` those of each prompt
  token after the first, from the logits before it)."""
  logits_1xLxV, rows = prefill(weights, ids_1xL)
  logits_LxV = logits_1xLxV[0]
  cache = [jax.lax.dynamic_update_slice(c, r, (slot, *[0] * (c.ndim - 1))) for c, r in zip(cache, rows)]
  first_1 = sampling.draw(logits_LxV[last][None], seed[None], step[None], temperature[None], top_k[None],
                          top_p[None])
  return (cache, first_1[0], sampling.logprobs(logits_LxV[last][None], first_1),
          sampling.logprobs(logits_LxV[:-1], ids_1xL[0, 1:]) if echo else None)


def _step(decode, weights, cache, token_B, position_B, seed_B, step_B, temperature_B, top_k_B, top_p_B, *, length):
  """The first B rows fed their tokens at their positions (< length), and the next drawn: (cache,
  token_B, its logprobs). Decode sees those rows' first `length` positions (kv_cache.POSITIONS_AXIS: a
  cache array's third axis from the end), so it costs what B rows of that length do; only the new
  position is written back, a scatter into the donated cache (in place: writing the whole view back,
  XLA copied the whole cache when B was 1)."""
  B = jnp.arange(len(token_B))
  view = [c[:len(B), ..., :length, :, :] for c in cache]
  logits_BxV, view = decode(weights, view, token_B, position_B)
  cache = [c.at[B, ..., position_B, :, :].set(v[B, ..., position_B, :, :]) for c, v in zip(cache, view)]
  token_B = sampling.draw(logits_BxV, seed_B, step_B, temperature_B, top_k_B, top_p_B)
  return cache, token_B, sampling.logprobs(logits_BxV, token_B)


class Slots:
  """`n` rows of a Decoder's KV cache that decode together, each at its own position. `start`
  prefills a prompt (on its own, length-bucketed) into a row and draws its first token; `step` feeds
  the rows in use their last tokens and draws the next. A step runs the first rows, to the next of
  `batch_sizes` (the decoder's below n, and n) that holds the rows in use, over their first
  positions, to the next of the decoder's `lengths` that holds the longest of those rows: its cost
  follows the rows in use and their lengths, not the slots and the context. Once some buckets are
  compiled ahead (`warmup`), one not compiled yet runs as the smallest compiled one that holds it
  (more rows or positions draw the same tokens: the rows past B are free, the positions past a row's
  are masked), or is compiled first if none does, so a server can answer once its smallest buckets
  are compiled and compile the rest in the background."""

  def __init__(self, decoder, n):
    self.decoder, self.n = decoder, n
    self.batch_sizes = sorted({*(b for b in decoder.batch_sizes if b < n), n})
    self.reset()

  def reset(self):
    """Every row free, in a fresh cache: after a start or step that failed, which may have been given the
    cache (donated: its buffers deleted) without returning the next one."""
    d, n = self.decoder, self.n
    # Committed to the device, as the cache that start and step return is: otherwise their first
    # calls after warmup would compile again, for the other kind of argument.
    self.cache = jax.device_put([jnp.zeros((n, *kv_cache.with_positions(a.shape, d.context)), a.dtype)
                                 for a in d.cache_avals], jax.devices()[0])
    self._cache_avals = [jax.ShapeDtypeStruct(c.shape, c.dtype, sharding=c.sharding) for c in self.cache]
    self.token_N, self.position_N, self.step_N, self.top_k_N = (np.zeros(n, np.int32) for _ in range(4))
    self.seed_N, self.temperature_N, self.top_p_N = np.zeros(n, np.uint32), np.zeros(n, np.float32), np.ones(n, np.float32)

  def buckets(self):
    """What `start` and `step` run, cheapest first (a prefill of L tokens costs about what a step of L
    rows does): ("start", 1, L) per prompt length, ("step", B, L) per batch size and length."""
    lengths = self.decoder.lengths
    return sorted([("start", 1, L) for L in lengths] + [("step", B, L) for L in lengths for B in self.batch_sizes],
                  key=lambda b: (b[1] * b[2] if b[0] == "step" else b[2], b[0] == "step", b[2]))

  def compiled(self):
    """The buckets compiled ahead so far."""
    return [b for b in self.buckets() if (self.n, *b) in self.decoder.compiled]

  def compile(self, bucket):
    """Compiles `bucket` (one of `buckets()`) unless it is; from any thread: one compiling a bucket
    that another thread is compiling waits for it."""
    key, d = (self.n, *bucket), self.decoder
    with d._compiling_lock:
      lock = d._compiling[key]
    with lock:
      if key in d.compiled:
        return
      kind, B, L = bucket
      args = self.start_args(0, np.zeros(L, np.int32)) if kind == "start" else self.step_args(B, L)
      args = (args[0], self._cache_avals, *args[2:])  # the cache's shapes: the worker may have donated its buffers
      if kind == "start":
        d.start.lower(*args, echo=True).compile()
      else:
        d.step.lower(*args, length=L).compile()
      d.compiled.add(key)

  def warmup(self, background=False):
    """Compiles every bucket now rather than on the first request that needs it, without running
    them. With `background`, the cheapest prefill and decode step are compiled now and the rest on a
    daemon thread, cheapest first; returns the thread."""
    self.decoder.warming = True
    buckets = self.buckets()
    now = [next(b for b in buckets if b[0] == kind) for kind in ("start", "step")] if background else buckets
    for bucket in now:
      self.compile(bucket)
    if not background:
      return None

    def compile_the_rest():
      for bucket in buckets:
        try:
          self.compile(bucket)
        except Exception:  # reported; a request that needs the bucket compiles it (and answers the error)
          traceback.print_exc()

    thread = threading.Thread(target=compile_the_rest, name="compile buckets", daemon=True)
    thread.start()
    return thread

  def _compiled_bucket(self, bucket):
    """`bucket`, or once buckets are compiled ahead, the smallest compiled one that holds it (same
    kind, as many rows and positions or more), or `bucket` compiled now if none does."""
    if not self.decoder.warming:
      return bucket
    kind, B, L = bucket
    held = [b for b in self.compiled() if b[0] == kind and b[1] >= B and b[2] >= L]
    if held:
      return min(held, key=lambda b: (b[1] * b[2], b != bucket))
    self.compile(bucket)
    return bucket

  def start_args(self, slot, ids, temperature=1.0, top_k=0, top_p=1.0, seed=0, length=None, step=0):
    """`Decoder.start`'s arguments; the prompt padded to `length` (default: the next of the lengths that holds it)."""
    context = self.decoder.context
    if not 1 <= len(ids) <= context:
      raise errors.UserError(f"A prompt of {len(ids)} tokens: the model reads 1 to {context}.")
    ids_1xL = np.full((1, length or bucket(len(ids), self.decoder.lengths)), -1, np.int32)
    ids_1xL[0, :len(ids)] = ids
    return (self.decoder.weights, self.cache, np.int32(slot), ids_1xL, np.int32(len(ids) - 1), np.uint32(seed),
            np.int32(step), np.float32(temperature), np.int32(top_k), np.float32(top_p))

  def start(self, slot, ids, temperature=1.0, top_k=0, top_p=1.0, seed=0, step=0, echo=True):
    """Prefills `ids` (1 to `context` token ids) into row `slot`: (the Token drawn after them, as the
    row's token `step`; with `echo`, the prompt's Tokens after the first, each with the logprobs the
    model gave it)."""
    length = self._compiled_bucket(("start", 1, bucket(len(ids), self.decoder.lengths)))[2]
    self.cache, first, first_logprobs, prompt_logprobs = self.decoder.start(
        *self.start_args(slot, ids, temperature, top_k, top_p, seed, length, step), echo=echo)
    self.token_N[slot], self.position_N[slot], self.step_N[slot] = first, len(ids), step + 1
    self.seed_N[slot], self.temperature_N[slot], self.top_k_N[slot], self.top_p_N[slot] = (
        seed, temperature, top_k, top_p)
    first = Token(int(first), *(np.asarray(x)[0] for x in first_logprobs))
    if not echo:
      return first, None
    logprob_L, top_ids_LxK, top_LxK = (np.asarray(x)[:len(ids) - 1] for x in prompt_logprobs)
    return first, [Token(int(t), *row) for t, *row in zip(ids[1:], logprob_L, top_ids_LxK, top_LxK)]

  def step_args(self, B, length):
    """`Decoder.step`'s arguments for the first B rows; a row past `length` (free, or ended) feeds at its end."""
    return (self.decoder.weights, self.cache, self.token_N[:B], np.minimum(self.position_N[:B], length - 1),
            self.seed_N[:B], self.step_N[:B], self.temperature_N[:B], self.top_k_N[:B], self.top_p_N[:B])

  def step(self, rows):
    """One more Token for each of `rows` (rows that have started), in their order. The step runs
    the first rows up to the batch size that holds them all, so a sequence should take the lowest
    free row: a free row among them decodes too (at a position past the length, clamped into it),
    and its tokens are ignored."""
    B = bucket(max(rows) + 1, self.batch_sizes)
    length = bucket(min(self.position_N[rows].max(), self.decoder.context - 1) + 1, self.decoder.lengths)
    _, B, length = self._compiled_bucket(("step", B, length))
    self.cache, token_B, logprobs = self.decoder.step(*self.step_args(B, length), length=length)
    token_B, logprobs = np.array(token_B), [np.asarray(x) for x in logprobs]
    self.token_N[:B] = token_B
    self.position_N[:B] += 1
    self.step_N[:B] += 1
    return [Token(int(token_B[r]), *(x[r] for x in logprobs)) for r in rows]

  def full(self, slot):
    """Whether row `slot` has reached the end of the context: its last token has no position to be fed at."""
    return self.position_N[slot] >= self.decoder.context


def generate(decoder, prompts, max_new_tokens, *, temperature=1.0, top_k=0, top_p=1.0, seed=0, stop_ids=(),
             slide=False):
  """Each prompt (a sequence of ids) followed by its sampled ids, as lists; every setting is one value
  or one per prompt. A row ends after its max_new_tokens, once it has drawn one of `stop_ids` (the end-of-text
  or end-of-turn tokens, its last id; empty: never), or (unless it slides, see above) where the context does: its last
  token would need a position past it (so it holds at most context + 1 ids). A sliding row's prompt
  may be longer than the context: its last `context` tokens are read."""
  n = len(prompts)
  per_row = lambda v: np.broadcast_to(np.asarray(v), (n,))
  new_N = per_row(max_new_tokens)
  settings = [dict(zip(("temperature", "top_k", "top_p", "seed"), s))
              for s in zip(*(per_row(v).tolist() for v in (temperature, top_k, top_p, seed)))]
  out = [[int(t) for t in p] for p in prompts]
  if any(not p for p in out):
    raise errors.UserError("Every prompt must hold at least one token.")
  slots, drawn_N = Slots(decoder, n), np.zeros(n, int)
  window = lambda i: out[i][-decoder.context:] if slide else out[i]

  def add(i, token):
    out[i].append(token.id)
    drawn_N[i] += 1

  for i in np.flatnonzero(new_N > 0):
    add(i, slots.start(i, window(i), **settings[i], echo=False)[0])
  while rows := [i for i in range(n) if drawn_N[i] < new_N[i] and out[i][-1] not in stop_ids
                 and (slide or not slots.full(i))]:
    again = [i for i in rows if slots.full(i) or decoder.step is None]  # its window prefilled afresh (no cache: always)
    if stepping := [i for i in rows if i not in again]:
      for i, token in zip(stepping, slots.step(stepping)):
        add(i, token)
    for i in again:  # after the step, which also runs rows it was not asked for (their tokens ignored)
      add(i, slots.start(i, window(i), **settings[i], step=int(drawn_N[i]), echo=False)[0])
  return out
