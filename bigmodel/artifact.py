"""Loads and runs an exported model (see bigmodel/export.py) with jax and numpy only.

    model = artifact.load("model_dir")
    probs_BxC = model.classify(x_BxS)                    # raw inputs, as the dataset holds them
    ids = model.generate([model.encode("ROMEO:")], 50, temperature=0.8, top_k=40)
    print(model.decode(ids[0]))

A model dir holds model.json (bigmodel/model_json.py: task, input spec, labels, the weights' paths,
shapes and dtypes; a language model's input spec gives its end-of-text token, `eos_id`, where generation stops,
and with a chat template (saved with the tokenizer: `chat`) the token that ends a reply, `end_of_turn_id`),
the functions serialised by jax.export (StableHLO with a symbolic batch size): a classifier's
forward.jax, a language model's prefill.jax and decode.jax (its KV-cache path, the cache an explicit
input and output, see bigmodel/export.py), weights.npz (one array per parameter path: the
functions' first argument, so edited weights need no new export) and, for text, the tokenizer.
The model's Python code is not needed: nothing here imports flax or bigmodel.models (text goes
through bigmodel/tokenizers.py: numpy, sentencepiece for BPE, tokenizers for a Hugging Face one).

Inputs are padded up to a few batch sizes (and, for token ids, lengths), so a function compiles
once per bucket; `warmup()` compiles them all. A language model's prefill and decode functions
decode through bigmodel/decoding.py (`Artifact.decoder`), as bigmodel.generate's flax model does:
`generate` here, and `decoding.Slots` for the server (bigmodel/serving/batching.py schedules them).
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel import errors
from bigmodel import chat, decoding, kv_cache, tokenizers  # jax and numpy (and a tokenizer library): no model code
from bigmodel.model_json import ModelJson

SPEC, FUNCTION, WEIGHTS = "model.json", "forward.jax", "weights.npz"
PREFILL, DECODE = "prefill.jax", "decode.jax"


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
  try:
    return ModelJson.from_json(spec)
  except ValueError as e:
    raise ArtifactError(f"{path} {e}. Export the model again with this version of bigmodel.") from None


def _read_function(model_dir, spec, name):
  path = os.path.join(model_dir, name)
  try:
    with open(path, "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
  except FileNotFoundError:
    raise ArtifactError(f"{path} is missing: the model dir is incomplete. Export the model again.") from None
  except Exception as e:  # flatbuffers and jax raise many kinds on bad bytes
    raise ArtifactError(f"{path} could not be read ({type(e).__name__}: {e}). It is corrupt, or was written by "
                        f"another jax (exported with {spec.jax_version}, this is {jax.__version__}). "
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
  if len(spec.weights) != len(wanted):
    raise ArtifactError(f"{model_dir}/{SPEC} lists {len(spec.weights)} weights; {FUNCTION} takes "
                        f"{len(wanted)}. The files come from different exports: export the model again.")
  weights = []
  with stored:
    for w, aval in zip(spec.weights, wanted):
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


class Artifact:
  """An exported model: `forward`, and `classify`, or `generate` (and its `decoder` for decoding.Slots), by its task."""

  def __init__(self, model_dir, batch_sizes=(1, 8, 32), lengths=()):
    spec = _read_spec(model_dir)
    self.spec = spec.to_json()  # as model.json holds it (the server shows it)
    self.task, self.input, self.labels, self.output = spec.task, spec.input, spec.labels, spec.output
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
    self.context, self.eos_id = self.input["context"], self.input.get("eos_id")  # eos_id None: the tokenizer has none
    # The chat template (bigmodel/chat.py; None: the model has none), saved with the tokenizer, and the token that
    # ends a reply (model.json's; an export that predates it: the template's).
    self.chat = chat.template(self.tokenizer)
    self.end_of_turn_id = self.input.get("end_of_turn_id", self.chat and self.chat.end_of_turn_id)
    # A chat reply ends at the end of turn or of text (Llama 3 may draw either; chat.Template.stop_ids).
    self.chat_stop_ids = tuple(dict.fromkeys(t for t in (self.end_of_turn_id, self.eos_id) if t is not None))
    decode = _read_function(model_dir, spec, DECODE)
    cache_avals = kv_cache.rows_in_decode_args(decode.in_avals, len(self.weights))
    self.decoder = decoding.Decoder(self.exported.call, decode.call, self.weights, cache_avals, self.context,
                                    self.batch_sizes, lengths)
    self.lengths = self.decoder.lengths
    self._forward = jax.jit(lambda weights, ids_BxL: self.exported.call(weights, ids_BxL)[0])

  def _pad(self, x):
    """x padded to a bucket: its batch with copies of row 0 (any real row is a safe input), token
    ids on the right with -1 (a causal model cannot see right pads)."""
    B = decoding.bucket(len(x), self.batch_sizes)
    x = np.concatenate([x, np.repeat(x[:1], B - len(x), 0)])
    if self.task == "generate":
      x = np.pad(x, ((0, 0), (0, decoding.bucket(x.shape[1], self.lengths) - x.shape[1])), constant_values=-1)
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
    if self.output == "sigmoid":
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

  def generate(self, prompts, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, seed=0, ignore_eos=False,
               slide=False):
    """Each prompt (1 to `context` ids) followed by its sampled ids, as lists; every setting is one
    value or one per prompt, and a prompt's text does not depend on the others (as in
    bigmodel.generate). A row ends after its max_new_tokens, at the end-of-text token `eos_id` (its
    last id; unless `ignore_eos`), or where the context does: its last token would need a position
    past it (so it holds at most context + 1 ids); with `slide`, it goes on over its last `context`
    tokens, as bigmodel.generate does (decoding.py)."""
    return decoding.generate(self.decoder, prompts, max_new_tokens, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=seed, slide=slide,
                             stop_ids=() if ignore_eos or self.eos_id is None else (self.eos_id,))

  def warmup(self, slots=None, background=False):
    """Compiles every bucket now rather than on the first request that needs it (a language model's
    for these decoding.Slots, without running them: `Slots.warmup`, which with `background` compiles
    the cheapest now and the rest on a thread, returned)."""
    if self.task == "generate":
      return slots.warmup(background)
    for B in self.batch_sizes:
      self._forward.lower(self.weights, jax.ShapeDtypeStruct((B, *self.input["shape"]), self.input_dtype)).compile()
    return None
