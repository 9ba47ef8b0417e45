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

from bigmodel import errors, kv_cache, platform, sampling

Token = collections.namedtuple("Token", "id logprob top_ids top_logprobs")  # top_*: sampling.TOP_LOGPROBS
# A prompt to prefill into row `slot` (Slots.start_all), and how its row draws: its first token is its token `step`.
Start = collections.namedtuple("Start", "slot ids temperature top_k top_p seed step", defaults=(1.0, 0, 1.0, 0, 0))


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
  jit = functools.partial(jax.jit, donate_argnums=1, compiler_options=platform.decode_compiler_options())
  return jit(functools.partial(_start, prefill), static_argnames="echo"), decode and jit(
      functools.partial(_step, decode), static_argnames="length")


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


def _start(prefill, weights, cache, slot_K, ids_KxL, last_K, seed_K, step_K, temperature_K, top_k_K, top_p_K, *,
           echo):
  """K prompts prefilled together into rows slot_K of the cache (their first L positions; those after
  hold an earlier row's keys, which no query sees before they are overwritten; a slot given twice
  must be given the same prompt: the padding): (cache, the token drawn after each prompt (as token
  step_K of its row), those tokens' logprobs, and with `echo` those of each prompt token after the
  first, from the logits before it). K prompts in one call: their dots run on K x L rows at once."""
  logits_KxLxV, rows = prefill(weights, ids_KxL)
  cache = [c.at[slot_K, ..., :ids_KxL.shape[1], :, :].set(r) for c, r in zip(cache, rows)]
  logits_KxV = jnp.take_along_axis(logits_KxLxV, last_K[:, None, None], 1)[:, 0]
  first_K = sampling.draw(logits_KxV, seed_K, step_K, temperature_K, top_k_K, top_p_K)
  return (cache, first_K, sampling.logprobs(logits_KxV, first_K),
          jax.vmap(sampling.logprobs)(logits_KxLxV[:, :-1], ids_KxL[:, 1:]) if echo else None)


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
  """`n` rows of a Decoder's KV cache that decode together, each at its own position. `start_all`
  prefills prompts into rows and draws their first tokens (prompts of a length bucket together, in
  calls of the batch sizes: K prompts in one call cost less than K calls); `step` feeds
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
    """What `start_all` and `step` run, cheapest first (a prefill of K prompts of L tokens costs about
    what a step of K x L rows does): ("start", K, L) and ("step", B, L) per batch size and length."""
    lengths = self.decoder.lengths
    return sorted([(kind, B, L) for kind in ("start", "step") for L in lengths for B in self.batch_sizes],
                  key=lambda b: (b[1] * b[2], b[0] == "step", b[2]))

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
      args = self.start_args([Start(0, np.zeros(L, np.int32))], B, L) if kind == "start" else self.step_args(B, L)
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

  def _holding(self, bucket):
    """The compiled buckets that hold `bucket`: same kind, as many rows and positions or more."""
    kind, B, L = bucket
    return [b for b in self.compiled() if b[0] == kind and b[1] >= B and b[2] >= L]

  def _compiled_bucket(self, bucket):
    """`bucket`, or once buckets are compiled ahead, the smallest compiled one that holds it, or
    `bucket` compiled now if none does."""
    if not self.decoder.warming:
      return bucket
    if held := self._holding(bucket):
      return min(held, key=lambda b: (b[1] * b[2], b != bucket))
    self.compile(bucket)
    return bucket

  def start_args(self, starts, K, length):
    """`Decoder.start`'s arguments for `starts` (at most K Starts): padded to K rows with copies of the
    first (the same row written twice with the same prompt), and to `length` positions with -1."""
    starts = [*starts, *[starts[0]] * (K - len(starts))]
    ids_KxL = np.full((K, length), -1, np.int32)
    for k, s in enumerate(starts):
      ids_KxL[k, :len(s.ids)] = s.ids
    column = lambda field, dtype: np.array([getattr(s, field) for s in starts], dtype)
    return (self.decoder.weights, self.cache, column("slot", np.int32), ids_KxL,
            np.array([len(s.ids) - 1 for s in starts], np.int32), column("seed", np.uint32), column("step", np.int32),
            column("temperature", np.float32), column("top_k", np.int32), column("top_p", np.float32))

  def start(self, slot, ids, temperature=1.0, top_k=0, top_p=1.0, seed=0, step=0, echo=True):
    """Prefills `ids` (1 to `context` token ids) into row `slot`: (the Token drawn after them, as the
    row's token `step`; with `echo`, the prompt's Tokens after the first, each with the logprobs the
    model gave it)."""
    return self.start_all([Start(slot, ids, temperature, top_k, top_p, seed, step)], echo)[0]

  def start_all(self, starts, echo=True):
    """`start` for each of `starts` (Starts, each its own row), in order. The prompts of a length bucket
    are prefilled together, in calls of the largest batch sizes that they fill (once buckets are
    compiled ahead, of those compiled)."""
    context = self.decoder.context
    if bad := [len(s.ids) for s in starts if not 1 <= len(s.ids) <= context]:
      raise errors.UserError(f"A prompt of {bad[0]} tokens: the model reads 1 to {context}.")
    by_length = collections.defaultdict(list)
    for i, s in enumerate(starts):
      by_length[bucket(len(s.ids), self.decoder.lengths)].append(i)
    out = [None] * len(starts)
    for length, todo in by_length.items():
      held = {K for _, K, _ in self._holding(("start", 1, length))} if self.decoder.warming else ()
      sizes = sorted(held or self.batch_sizes)
      while todo:
        K = max((K for K in sizes if K <= len(todo)), default=sizes[0])
        chunk, todo = todo[:K], todo[K:]
        _, K, L = self._compiled_bucket(("start", K, length))
        for i, result in zip(chunk, self._start([starts[i] for i in chunk], K, L, echo)):
          out[i] = result
    return out

  def _start(self, starts, K, length, echo):
    self.cache, first_K, first_logprobs, prompt_logprobs = self.decoder.start(
        *self.start_args(starts, K, length), echo=echo)
    first_K, first_logprobs = np.asarray(first_K), [np.asarray(x) for x in first_logprobs]
    prompt_logprobs = echo and [np.asarray(x) for x in prompt_logprobs]
    out = []
    for k, s in enumerate(starts):
      self.token_N[s.slot], self.position_N[s.slot], self.step_N[s.slot] = first_K[k], len(s.ids), s.step + 1
      self.seed_N[s.slot], self.temperature_N[s.slot], self.top_k_N[s.slot], self.top_p_N[s.slot] = (
          s.seed, s.temperature, s.top_k, s.top_p)
      first = Token(int(first_K[k]), *(x[k] for x in first_logprobs))
      if not echo:
        out.append((first, None))
        continue
      logprob_L, top_ids_LxK, top_LxK = (x[k, :len(s.ids) - 1] for x in prompt_logprobs)
      out.append((first, [Token(int(t), *row) for t, *row in zip(s.ids[1:], logprob_L, top_ids_LxK, top_LxK)]))
    return out

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

  starting = np.flatnonzero(new_N > 0)
  for i, (token, _) in zip(starting, slots.start_all([Start(i, window(i), **settings[i]) for i in starting], False)):
    add(i, token)
  while rows := [i for i in range(n) if drawn_N[i] < new_N[i] and out[i][-1] not in stop_ids
                 and (slide or not slots.full(i))]:
    again = [i for i in rows if slots.full(i) or decoder.step is None]  # its window prefilled afresh (no cache: always)
    if stepping := [i for i in rows if i not in again]:
      for i, token in zip(stepping, slots.step(stepping)):
        add(i, token)
    # After the step, which also runs rows it was not asked for (their tokens ignored).
    for i, (token, _) in zip(again, slots.start_all(
        [Start(i, window(i), **settings[i], step=int(drawn_N[i])) for i in again], False)):
      add(i, token)
  return out
