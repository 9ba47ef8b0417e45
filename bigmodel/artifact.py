"""Loads and runs an exported model (see bigmodel/export.py) with jax and numpy only.

    model = artifact.load("model_dir")
    probs_BxC = model.classify(x_BxS)                    # raw inputs, as the dataset holds them
    ids = model.generate([model.encode("ROMEO:")], 50, temperature=0.8, top_k=40)
    print(model.decode(ids[0]))

A model dir holds model.json (task, input spec, labels, the weights' paths, shapes and dtypes; a
language model's input spec gives its end-of-text token, `eos_id`, where generation stops),
the functions serialised by jax.export (StableHLO with a symbolic batch size): a classifier's
forward.jax, a language model's prefill.jax and decode.jax (its KV-cache path, the cache an explicit
input and output, see bigmodel/export.py), weights.npz (one array per parameter path: the
functions' first argument, so edited weights need no new export) and, for text, the tokenizer.
The model's Python code is not needed: nothing here imports flax or bigmodel.models (text goes
through bigmodel/tokenizers.py: numpy, sentencepiece for BPE, tokenizers for a Hugging Face one).

Inputs are padded up to a few batch sizes (and, for token ids, lengths), so a function compiles
once per bucket; `warmup()` compiles them all (a language model's: `Slots.buckets()`, cheapest
first; `Slots.compile` compiles one, from any thread). A language model generates through `Slots`: cache
rows that decode together, each at its own position, which a sequence joins and leaves at any
token (bigmodel/batching.py schedules them for the server). A decode step runs the first rows,
to the next batch size that holds those in use, over the first positions, to the next length that
holds the longest: its cost follows the rows in use and their lengths, not the slots and the context.
"""
import collections
import functools
import json
import os
import threading
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel import errors
from bigmodel import sampling, tokenizers  # jax and numpy (and a tokenizer library): no model code

FORMAT = "bigmodel.export/3"  # 2: language models export prefill and decode with their KV cache; 3: of any length
SPEC, FUNCTION, WEIGHTS = "model.json", "forward.jax", "weights.npz"
PREFILL, DECODE = "prefill.jax", "decode.jax"
TASKS = ("classify", "generate")


class ArtifactError(errors.UserError):
  """A model dir that is missing, incomplete or corrupt."""


def load(model_dir, batch_sizes=(1, 8, 32), lengths=()):
  """The exported model in `model_dir`, compiled lazily for each of these batch sizes (and lengths).
  A language model's batch sizes are those of `forward`; prompts are prefilled one at a time."""
  return Artifact(model_dir, batch_sizes, lengths)


def _read_spec(model_dir):
  if not os.path.isdir(model_dir):
    raise ArtifactError(f"Model dir {model_dir!r} does not exist. Make one with: python -m bigmodel.export "
                        f"--workdir=<training workdir> --out={model_dir}")
  path = os.path.join(model_dir, SPEC)
  if not os.path.exists(path):
    raise ArtifactError(f"{model_dir!r} holds no {SPEC}: it is not an exported model. Make one with: "
                        f"python -m bigmodel.export --workdir=<training workdir> --out={model_dir}")
  try:
    with open(path, encoding="utf-8") as f:
      spec = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise ArtifactError(f"{path} is corrupt ({e}). Export the model again.") from None
  if not isinstance(spec, dict) or spec.get("format") != FORMAT:
    found = spec.get("format") if isinstance(spec, dict) else None
    raise ArtifactError(f"{path} has format {found!r}; this loader reads {FORMAT!r}. Export the model again "
                        "with this version of bigmodel.")
  missing = [k for k in ("task", "input", "weights") if k not in spec]
  if missing or spec["task"] not in TASKS:
    raise ArtifactError(f"{path} is incomplete: missing {missing or 'a known task'}. Export the model again.")
  return spec


def _read_function(model_dir, spec, name):
  path = os.path.join(model_dir, name)
  try:
    with open(path, "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
  except FileNotFoundError:
    raise ArtifactError(f"{path} is missing: the model dir is incomplete. Export the model again.") from None
  except Exception as e:  # flatbuffers and jax raise many kinds on bad bytes
    raise ArtifactError(f"{path} could not be read ({type(e).__name__}: {e}). It is corrupt, or was written by "
                        f"another jax (exported with {spec.get('jax_version')}, this is {jax.__version__}). "
                        "Export the model again.") from None
  platform = jax.default_backend()
  if platform not in exported.platforms and not (platform == "gpu" and "cuda" in exported.platforms):
    raise ArtifactError(f"{path} was exported for {', '.join(exported.platforms)}, not {platform}. Export it "
                        f"again with --platforms={platform}.")
  return exported


def _read_weights(model_dir, spec, exported):
  """The weights in the order the function takes them, checked against its argument shapes."""
  path = os.path.join(model_dir, WEIGHTS)
  try:
    stored = np.load(path)
  except FileNotFoundError:
    raise ArtifactError(f"{path} is missing: the model dir is incomplete. Export the model again.") from None
  except Exception as e:
    raise ArtifactError(f"{path} is corrupt ({type(e).__name__}: {e}). Export the model again.") from None
  wanted = exported.in_avals[:-1]  # the last argument is the input
  if len(spec["weights"]) != len(wanted):
    raise ArtifactError(f"{model_dir}/{SPEC} lists {len(spec['weights'])} weights; {FUNCTION} takes "
                        f"{len(wanted)}. The files come from different exports: export the model again.")
  weights = []
  with stored:
    for w, aval in zip(spec["weights"], wanted):
      if w["path"] not in stored.files:
        raise ArtifactError(f"{path} has no array {w['path']!r}. Export the model again.")
      try:
        x = stored[w["path"]]
      except Exception as e:
        raise ArtifactError(f"{path}: array {w['path']!r} is corrupt ({e}). Export the model again.") from None
      if x.dtype.kind == "V":  # bfloat16 and other ml_dtypes are stored as raw bytes
        x = x.view(jnp.dtype(w["dtype"]))
      if x.shape != aval.shape or x.dtype != aval.dtype:
        raise ArtifactError(f"{path}: {w['path']} is {x.dtype}{list(x.shape)}, the function takes "
                            f"{aval.dtype}{list(aval.shape)}. Weights must keep the shapes they were exported with.")
      weights.append(x)
  return weights


def _read_tokenizer(model_dir):
  try:
    return tokenizers.load(model_dir)
  except (OSError, ValueError, KeyError) as e:
    raise ArtifactError(f"The tokenizer in {model_dir} could not be read ({e}). Export the model again.") from None


def _bucket(n, sizes):
  """The smallest size >= n (sizes sorted)."""
  return next(s for s in sizes if s >= n)


class Artifact:
  """An exported model: `forward`, and `classify` or `generate` (or `Slots`) by its task."""

  def __init__(self, model_dir, batch_sizes=(1, 8, 32), lengths=()):
    self.spec = spec = _read_spec(model_dir)
    self.task, self.input, self.labels = spec["task"], spec["input"], spec.get("labels")
    # A classifier's forward function; a language model's prefill (logits and cache), its forward too.
    self.exported = _read_function(model_dir, spec, FUNCTION if self.task == "classify" else PREFILL)
    self.weights = jax.device_put(_read_weights(model_dir, spec, self.exported))
    self.input_dtype = np.dtype(self.exported.in_avals[-1].dtype)
    self.tokenizer = _read_tokenizer(model_dir) if self.input["kind"] in ("text", "tokens") else None
    if not batch_sizes or min(batch_sizes) < 1:
      raise errors.UserError(f"Batch sizes must be >= 1, got {batch_sizes}.")
    self.batch_sizes = sorted(set(batch_sizes))
    self.lengths = ()
    if self.task == "classify":
      self._forward = jax.jit(self.exported.call)
      return
    context = self.context = self.input["context"]
    self.eos_id = self.input.get("eos_id")  # None: the tokenizer has none (or an export from before it was kept)
    if any(not 1 <= n <= context for n in lengths):
      raise errors.UserError(f"Lengths must be in [1, {context}] (the model's context), got {lengths}.")
    defaults = [2 ** i for i in range(4, context.bit_length())]  # 16, 32, ... below the context
    self.lengths = sorted({*(lengths or defaults), context})
    self.decoder = _read_function(model_dir, spec, DECODE)
    self._forward = jax.jit(lambda weights, ids_BxL: self.exported.call(weights, ids_BxL)[0])
    self._start = jax.jit(functools.partial(_start, self.exported.call), donate_argnums=1)
    self._step = jax.jit(functools.partial(_step, self.decoder.call), donate_argnums=1, static_argnames="length")
    self._compiled, self._compiling = set(), collections.defaultdict(threading.Lock)  # (slots, *bucket)
    self._compiling_lock = threading.Lock()

  def _pad(self, x):
    """x padded to a bucket: its batch with copies of row 0 (any real row is a safe input), token
    ids on the right with -1 (a causal model cannot see right pads)."""
    B = _bucket(len(x), self.batch_sizes)
    x = np.concatenate([x, np.repeat(x[:1], B - len(x), 0)])
    if self.task == "generate":
      x = np.pad(x, ((0, 0), (0, _bucket(x.shape[1], self.lengths) - x.shape[1])), constant_values=-1)
    return x

  def forward(self, x):
    """The model's outputs for a batch: logits_BxC, or logits_BxLxV for token ids_BxL (-1 = padding)."""
    x = np.asarray(x, self.input_dtype)
    if self.task == "generate" and x.shape[1] > self.context:
      raise errors.UserError(f"{x.shape[1]} token ids exceed the model's context of {self.context}.")
    outs, largest = [], self.batch_sizes[-1]
    for start in range(0, len(x), largest):
      chunk = x[start:start + largest]
      out = np.asarray(self._forward(self.weights, self._pad(chunk)))[:len(chunk)]
      outs.append(out[:, :x.shape[1]] if self.task == "generate" else out)
    return np.concatenate(outs)

  def classify(self, x):
    """Class probabilities_BxC for a batch of raw inputs (softmax, or one sigmoid per class)."""
    logits_BxC = self.forward(x).astype(np.float64)
    if self.spec.get("output") == "sigmoid":
      p = 1 / (1 + np.exp(-logits_BxC))
      return np.concatenate([1 - p, p], -1) if p.shape[-1] == 1 else p  # one output: P(class 1)
    e = np.exp(logits_BxC - logits_BxC.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  def encode(self, text):
    """Text -> the model's input: token ids (language models), or seq_len ids padded with -1."""
    if self.input["kind"] == "tokens":
      return self.tokenizer.encode(text)
    seq_len = self.input["shape"][0]  # truncated and padded as in training
    ids = self.tokenizer.encode(text, max_len=seq_len)
    return np.pad(ids, (0, seq_len - len(ids)), constant_values=-1)

  def decode(self, ids):
    return self.tokenizer.decode(ids)

  def generate(self, prompts, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, seed=0, ignore_eos=False):
    """Each prompt (1 to `context` ids) followed by its sampled ids, as lists; every setting is one
    value or one per prompt, and a prompt's text does not depend on the others (as in
    bigmodel.generate). A row ends after its max_new_tokens, at the end-of-text token `eos_id` (its
    last id; unless `ignore_eos`), or where the context does: its last token would need a position
    past it (so it holds at most context + 1 ids)."""
    n = len(prompts)
    settings = np.broadcast_arrays(*(np.asarray(v) for v in (max_new_tokens, temperature, top_k, top_p, seed)),
                                   np.zeros(n))[:5]
    new_N, settings = settings[0], list(zip(*settings[1:]))
    slots, out = Slots(self, n), [[int(t) for t in p] for p in prompts]
    eos_id = None if ignore_eos else self.eos_id
    ended = lambda i: len(out[i]) > len(prompts[i]) and out[i][-1] == eos_id
    for i in np.flatnonzero(new_N > 0):
      out[i].append(slots.start(i, prompts[i], *settings[i])[0].id)
    while rows := [i for i in range(n) if len(out[i]) - len(prompts[i]) < new_N[i] and not slots.full(i)
                   and not ended(i)]:
      for i, token in zip(rows, slots.step(rows)):
        out[i].append(token.id)
    return out

  def warmup(self, slots=None, background=False):
    """Compiles every bucket now rather than on the first request that needs it (a language model's
    for these `slots`), without running them. With `background`, a language model's cheapest prefill
    and decode step are compiled now and the rest on a daemon thread, cheapest first (a request that
    needs one before then runs in a larger compiled one, or waits for it: `Slots`); returns the thread."""
    if self.task == "classify":
      for B in self.batch_sizes:
        self._forward.lower(self.weights, jax.ShapeDtypeStruct((B, *self.input["shape"]), self.input_dtype)).compile()
      return None
    buckets = slots.buckets()
    now = [next(b for b in buckets if b[0] == kind) for kind in ("start", "step")] if background else buckets
    for bucket in now:
      slots.compile(bucket)
    if not background:
      return None

    def compile_the_rest():
      for bucket in buckets:
        try:
          slots.compile(bucket)
        except Exception:  # reported; a request that needs the bucket compiles it (and answers the error)
          traceback.print_exc()

    thread = threading.Thread(target=compile_the_rest, name="compile buckets", daemon=True)
    thread.start()
    return thread


Token = collections.namedtuple("Token", "id logprob top_ids top_logprobs")  # top_*: sampling.TOP_LOGPROBS


def _start(prefill, weights, cache, slot, ids_1xL, last, seed, temperature, top_k, top_p):
  """A prompt prefilled into row `slot` of the cache (its first L positions; those after hold an
  earlier row's keys, which no query sees before they are overwritten): (cache, its first token,
  the logprobs of that token and of each prompt token after the first, from the logits before it)."""
  logits_1xLxV, rows = prefill(weights, ids_1xL)
  logits_LxV = logits_1xLxV[0]
  cache = [jax.lax.dynamic_update_slice(c, r, (slot, *[0] * (c.ndim - 1))) for c, r in zip(cache, rows)]
  first_1 = sampling.draw(logits_LxV[last][None], seed[None], jnp.zeros(1, jnp.int32), temperature[None],
                          top_k[None], top_p[None])
  return (cache, first_1[0], sampling.logprobs(logits_LxV[last][None], first_1),
          sampling.logprobs(logits_LxV[:-1], ids_1xL[0, 1:]))


def _step(decode, weights, cache, token_B, position_B, seed_B, step_B, temperature_B, top_k_B, top_p_B, *, length):
  """The first B rows fed their tokens at their positions (< length), and the next drawn: (cache,
  token_B, its logprobs). Decode sees those rows' first `length` positions (a cache array's third
  axis from the end, see bigmodel/export.py), so it costs what B rows of that length do; only the
  new position is written back, a scatter into the donated cache (in place: writing the whole view
  back, XLA copied the whole cache when B was 1)."""
  B = jnp.arange(len(token_B))
  view = [c[:len(B), ..., :length, :, :] for c in cache]
  logits_BxV, view = decode(weights, view, token_B, position_B)
  cache = [c.at[B, ..., position_B, :, :].set(v[B, ..., position_B, :, :]) for c, v in zip(cache, view)]
  token_B = sampling.draw(logits_BxV, seed_B, step_B, temperature_B, top_k_B, top_p_B)
  return cache, token_B, sampling.logprobs(logits_BxV, token_B)


class Slots:
  """`n` rows of a language model's KV cache that decode together, each at its own position.
  `start` prefills a prompt (on its own, length-bucketed) into a row and draws its first token;
  `step` feeds the rows in use their last tokens and draws the next. Token i of a row is
  sampling.draw's step i of its seed, as in bigmodel.generate, so a row's text depends on its
  prompt, settings and seed alone. A step runs the first rows, to the next of `batch_sizes` (the
  model's below n, and n) that holds the rows in use, over their first positions, to the next of
  the model's `lengths` that holds the longest of those rows. A bucket not compiled yet is run as
  the smallest compiled one that holds it (more rows or positions draw the same tokens: the rows
  past B are free, the positions past a row's are masked), or compiled first if none does, so a
  server can answer once its smallest buckets are compiled and compile the rest in the background."""

  def __init__(self, model, n):
    self.model, self.n = model, n
    self.batch_sizes = sorted({*(b for b in model.batch_sizes if b < n), n})
    self._start, self._step = model._start, model._step
    self.reset()

  def reset(self):
    """Every row free, in a fresh cache: after a start or step that failed, which may have been given the
    cache (donated: its buffers deleted) without returning the next one."""
    model, n = self.model, self.n
    cache_avals = model.decoder.in_avals[len(model.weights):-2]  # (weights, cache, token_B, position_B)
    shapes = [(n, *a.shape[1:-3], model.context, *a.shape[-2:]) for a in cache_avals]  # rows, ..., positions, ...
    # Committed to the device, as the cache that start and step return is: otherwise their first
    # calls after warmup would compile again, for the other kind of argument.
    self.cache = jax.device_put([jnp.zeros(shape, a.dtype) for shape, a in zip(shapes, cache_avals)],
                                jax.devices()[0])
    self._cache_avals = [jax.ShapeDtypeStruct(c.shape, c.dtype, sharding=c.sharding) for c in self.cache]
    self.token_N, self.position_N, self.step_N, self.top_k_N = (np.zeros(n, np.int32) for _ in range(4))
    self.seed_N, self.temperature_N, self.top_p_N = np.zeros(n, np.uint32), np.zeros(n, np.float32), np.ones(n, np.float32)

  def buckets(self):
    """What `start` and `step` run, cheapest first (a prefill of L tokens costs about what a step of L
    rows does): ("start", 1, L) per prompt length, ("step", B, L) per batch size and length."""
    lengths = self.model.lengths
    return sorted([("start", 1, L) for L in lengths] + [("step", B, L) for L in lengths for B in self.batch_sizes],
                  key=lambda b: (b[1] * b[2] if b[0] == "step" else b[2], b[0] == "step", b[2]))

  def compiled(self):
    """The buckets compiled so far."""
    return [b for b in self.buckets() if (self.n, *b) in self.model._compiled]

  def compile(self, bucket):
    """Compiles `bucket` (one of `buckets()`) unless it is; from any thread: one compiling a bucket
    that another thread is compiling waits for it."""
    key, model = (self.n, *bucket), self.model
    with model._compiling_lock:
      lock = model._compiling[key]
    with lock:
      if key in model._compiled:
        return
      kind, B, L = bucket
      args = self.start_args(0, np.zeros(L, np.int32)) if kind == "start" else self.step_args(B, L)
      args = (args[0], self._cache_avals, *args[2:])  # the cache's shapes: the worker may have donated its buffers
      if kind == "start":
        self._start.lower(*args).compile()
      else:
        self._step.lower(*args, length=L).compile()
      model._compiled.add(key)

  def _compiled_bucket(self, bucket):
    """`bucket`, or the smallest compiled one that holds it (same kind, as many rows and positions or
    more), or `bucket` compiled now if none does."""
    kind, B, L = bucket
    held = [b for b in self.compiled() if b[0] == kind and b[1] >= B and b[2] >= L]
    if held:
      return min(held, key=lambda b: (b[1] * b[2], b != bucket))
    self.compile(bucket)
    return bucket

  def start_args(self, slot, ids, temperature=1.0, top_k=0, top_p=1.0, seed=0, length=None):
    """`_start`'s arguments; the prompt padded to `length` (default: the next of the lengths that holds it)."""
    if not 1 <= len(ids) <= self.model.context:
      raise errors.UserError(f"A prompt of {len(ids)} tokens: the model reads 1 to {self.model.context}.")
    ids_1xL = np.full((1, length or _bucket(len(ids), self.model.lengths)), -1, np.int32)
    ids_1xL[0, :len(ids)] = ids
    return (self.model.weights, self.cache, np.int32(slot), ids_1xL, np.int32(len(ids) - 1), np.uint32(seed),
            np.float32(temperature), np.int32(top_k), np.float32(top_p))

  def start(self, slot, ids, temperature=1.0, top_k=0, top_p=1.0, seed=0):
    """Prefills `ids` (1 to `context` token ids) into row `slot`: (its first Token, the prompt's
    Tokens after the first, each with the logprobs the model gave it)."""
    length = self._compiled_bucket(("start", 1, _bucket(len(ids), self.model.lengths)))[2]
    self.cache, first, first_logprobs, prompt_logprobs = self._start(
        *self.start_args(slot, ids, temperature, top_k, top_p, seed, length))
    self.token_N[slot], self.position_N[slot], self.step_N[slot] = first, len(ids), 1
    self.seed_N[slot], self.temperature_N[slot], self.top_k_N[slot], self.top_p_N[slot] = (
        seed, temperature, top_k, top_p)
    first = Token(int(first), *(np.asarray(x)[0] for x in first_logprobs))
    logprob_L, top_ids_LxK, top_LxK = (np.asarray(x)[:len(ids) - 1] for x in prompt_logprobs)
    return first, [Token(int(t), *row) for t, *row in zip(ids[1:], logprob_L, top_ids_LxK, top_LxK)]

  def step_args(self, B, length):
    """`_step`'s arguments for the first B rows; a row past `length` (free, or ended) feeds at its end."""
    return (self.model.weights, self.cache, self.token_N[:B], np.minimum(self.position_N[:B], length - 1),
            self.seed_N[:B], self.step_N[:B], self.temperature_N[:B], self.top_k_N[:B], self.top_p_N[:B])

  def step(self, rows):
    """One more Token for each of `rows` (rows that have started), in their order. The step runs
    the first rows up to the batch size that holds them all, so a sequence should take the lowest
    free row: a free row among them decodes too (at a position past the length, clamped into it),
    and its tokens are ignored."""
    B = _bucket(max(rows) + 1, self.batch_sizes)
    length = _bucket(min(self.position_N[rows].max(), self.model.context - 1) + 1, self.model.lengths)
    _, B, length = self._compiled_bucket(("step", B, length))
    self.cache, token_B, logprobs = self._step(*self.step_args(B, length), length=length)
    token_B, logprobs = np.array(token_B), [np.asarray(x) for x in logprobs]
    self.token_N[:B] = token_B
    self.position_N[:B] += 1
    self.step_N[:B] += 1
    return [Token(int(token_B[r]), *(x[r] for x in logprobs)) for r in rows]

  def full(self, slot):
    """Whether row `slot` has reached the end of the context: its last token has no position to be fed at."""
    return self.position_N[slot] >= self.model.context
