"""The requests the server takes, one type per endpoint: its fields, each declared once with its default,
range and meaning (`field`), and `parse(Type, body, limits)`, which checks a parsed JSON body against
them and returns the request, or raises http.HTTPError (400; 404 for a model this server does not serve)
naming the field. /v1/model describes them from the same declarations (`describe`).

A new endpoint's request is one more dataclass here: its fields, their checks (Number, flag, ...), and
a `check(limits)` method for what depends on several fields.
"""
import dataclasses
import json
from typing import Callable

import numpy as np

from bigmodel import sampling
from bigmodel.serving import stops
from bigmodel.serving.http import HTTPError

REQUIRED = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Limits:
  """What requests are checked against: the server's options and the model's."""
  name: str  # the model's name (--model_name)
  max_new_tokens: int = 256  # the most tokens a request may ask for
  max_queue: int = 256  # sequences that may wait
  context: int = 0  # language models: the most prompt tokens
  vocab_size: int = 0
  input: dict = None  # the model's input spec (model.json): a classifier's shape and dtype
  encode: Callable = None  # text -> ids; ValueError for text it cannot encode
  decode: Callable = None  # ids -> text

  @property
  def default_new_tokens(self):
    return min(64, self.max_new_tokens)


class Limit(str):
  """A bound or default that is one of the Limits, by name: Limit("max_new_tokens")."""

  def of(self, limits):
    return getattr(limits, self)


def _of(value, limits):
  return value.of(limits) if isinstance(value, Limit) else value


def field(default, check, meaning):
  """A request's field: its default (REQUIRED: it must be sent; None: absent, nothing to check), the check
  of a value sent, `check(value, name, limits) -> the value parsed` (HTTPError if it is wrong), and what
  it means."""
  return dataclasses.field(default=default, metadata=dict(check=check, meaning=meaning))


def _show(value):
  return json.dumps(value)[:100]


@dataclasses.dataclass(frozen=True)
class Number:
  """An int or float (per `kind`) in [low, high]; a bound may be a Limit."""
  kind: type
  low: float
  high: float

  def __call__(self, value, name, limits):
    low, high = _of(self.low, limits), _of(self.high, limits)
    ok_types = (int,) if self.kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types) or not low <= value <= high:
      raise HTTPError(400, f"{name} must be {self.describe(limits)}, got {_show(value)}.", name)
    return self.kind(value)

  def describe(self, limits):
    return f"{'an integer' if self.kind is int else 'a number'} in [{_of(self.low, limits)}, {_of(self.high, limits)}]"


def flag(value, name, limits):
  if not isinstance(value, bool):
    raise HTTPError(400, f"{name} must be true or false, got {_show(value)}.", name)
  return value


def string(value, name, limits):
  if not isinstance(value, str):
    raise HTTPError(400, f"{name} must be a string, got {_show(value)}.", name)
  return value


def model_name(value, name, limits):
  if value != limits.name:
    raise HTTPError(404, f"The model {_show(value)} does not exist: this server serves {limits.name!r} "
                         "(GET /v1/models).", name, "model_not_found")
  return value


def neutral(value):
  """An OpenAI field this server takes only at its neutral value (clients send them anyway)."""
  def check(sent, name, limits):
    if sent != value:
      raise HTTPError(400, f"{name} is not supported: leave it out (or {json.dumps(value)}).", name)
    return sent
  return check


def stop(value, name, limits):
  return stops.parse(value, name)


def encode(text, name, limits):
  """The text as the model's input (token ids)."""
  try:
    return limits.encode(text)
  except ValueError as e:  # a character the char tokenizer has never seen
    raise HTTPError(400, f"The text cannot be encoded: {e}", name) from None


def prompt_ids(ids, name, limits):
  """Token ids that fit the context."""
  if not 1 <= len(ids) <= limits.context:
    raise HTTPError(400, f"The prompt is {len(ids)} tokens; this model reads 1 to {limits.context} (its context). "
                         + ("Shorten it." if len(ids) else "Send some text."), name)
  return ids


def prompt(value, name, limits):
  """A string's token ids, that fit the context."""
  return prompt_ids([int(t) for t in encode(string(value, name, limits), name, limits)], name, limits)


def prompts(value, name, limits):
  """OpenAI's `prompt`: a string, a list of strings, a list of token ids or a list of such lists, as
  [(text, ids)]."""
  is_ids = lambda v: isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
  if isinstance(value, str) or is_ids(value):
    value = [value]
  if not isinstance(value, list) or not value or not all(isinstance(p, str) or is_ids(p) for p in value):
    raise HTTPError(400, "prompt must be a string, a list of strings, a list of token ids or a list of such "
                         f"lists, got {_show(value)}.", name)
  out = []
  for p in value:
    if isinstance(p, str):
      out.append((p, prompt(p, name, limits)))
    elif not all(0 <= t < limits.vocab_size for t in p):
      raise HTTPError(400, f"Token ids must be in [0, {limits.vocab_size}) (the vocabulary), got {p[:20]}.", name)
    else:
      out.append((limits.decode(prompt_ids(p, name, limits)), p))
  return tuple(out)


def array(value, name, limits):
  """A nested list of numbers of the model's input shape, as an array of its dtype."""
  shape, dtype = tuple(limits.input["shape"]), limits.input["dtype"]
  what = f"a nested list of numbers of shape {list(shape)}"
  try:
    x = np.asarray(value)
  except ValueError:  # ragged
    raise HTTPError(400, f"{name} must be {what}; its lists have unequal lengths.", name) from None
  if x.dtype.kind not in "iuf":
    raise HTTPError(400, f"{name} must be {what}; it holds strings, booleans, nulls or objects.", name)
  if x.shape != shape:
    raise HTTPError(400, f"{name} has shape {list(x.shape)}; this model takes {what}.", name)
  x = x.astype(np.float64)
  if not np.isfinite(x).all():  # JSON's 1e999 parses as infinity
    raise HTTPError(400, f"{name} holds infinite values; send finite numbers.", name)
  if dtype == "uint8" and ((x != np.round(x)) | (x < 0) | (x > 255)).any():
    raise HTTPError(400, f"{name} must hold integers 0..255 (uint8 pixel values, as in the dataset).", name)
  return x.astype(dtype)


def text_ids(value, name, limits):
  """A classifier's text, as the model's input ids."""
  return encode(string(value, name, limits), name, limits)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassifyInput:
  """POST /v1/classify to a model of numbers."""
  input: np.ndarray = field(REQUIRED, array, "numbers of the model's input shape (GET /v1/model)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassifyText:
  """POST /v1/classify to a model of text."""
  text: np.ndarray = field(REQUIRED, text_ids, "a string (its first tokens, as many as the model reads)")


SEED_RANGE = Number(int, 0, 2 ** 31 - 16)  # a completion's choice j draws with seed + j (up to n = 16)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Completion:
  """POST /v1/completions: OpenAI's completions API."""
  model: str = field(REQUIRED, model_name, "the model's name (GET /v1/models)")
  prompt: tuple = field(REQUIRED, prompts, "a string, a list of strings, a list of token ids or a list of such lists")
  max_tokens: int = field(16, Number(int, 0, Limit("max_new_tokens")), "tokens to draw")
  temperature: float = field(1.0, Number(float, 0.0, 2.0), "0: greedy")
  top_p: float = field(1.0, Number(float, 1e-9, 1.0), "nucleus sampling")
  n: int = field(1, Number(int, 1, 16), "completions per prompt")
  stop: stops.Stops = field(stops.Stops(), stop, f"a string or up to {stops.MAX_STOPS}, each at most "
                                                 f"{stops.MAX_STOP_CHARS} characters")
  seed: int = field(None, SEED_RANGE, "default: random")
  stream: bool = field(False, flag, "server-sent events, a chunk per token, then [DONE]")
  logprobs: int = field(None, Number(int, 0, sampling.TOP_LOGPROBS), "the most likely tokens' logprobs, per token")
  echo: bool = field(False, flag, "the prompt before the completion")
  ignore_eos: bool = field(False, flag, "vLLM's: go on past the end-of-text token")
  user: str = field(None, string, "ignored")
  frequency_penalty: float = field(0, neutral(0), "not supported: 0 only")
  presence_penalty: float = field(0, neutral(0), "not supported: 0 only")
  best_of: int = field(1, neutral(1), "not supported: 1 only")
  logit_bias: dict = field(None, neutral({}), "not supported: {} only")
  suffix: str = field(None, neutral(None), "not supported")

  def check(self, limits):
    if len(self.prompt) * self.n > limits.max_queue:
      raise HTTPError(400, f"{len(self.prompt)} prompts x n={self.n} is more sequences than the queue holds "
                           f"({limits.max_queue}); send fewer at a time.", "n")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Generate:
  """POST /v1/generate: a completion of one prompt, with top_k."""
  prompt: list = field(REQUIRED, prompt, "a string of 1 to the context's tokens")
  max_new_tokens: int = field(Limit("default_new_tokens"), Number(int, 0, Limit("max_new_tokens")), "tokens to draw")
  temperature: float = field(1.0, Number(float, 0.0, 1e6), "0: greedy")
  top_k: int = field(0, Number(int, 0, 2 ** 31 - 1), "0: all tokens")
  top_p: float = field(1.0, Number(float, 1e-9, 1.0), "nucleus sampling")
  seed: int = field(0, Number(int, 0, 2 ** 31 - 1), "the same seed, the same text")
  ignore_eos: bool = field(False, flag, "go on past the end-of-text token")


def parse(request_type, body, limits):
  """`body` (parsed JSON) as a `request_type`, every field checked in the order declared."""
  fields = dataclasses.fields(request_type)
  required = [f.name for f in fields if f.default is REQUIRED]
  example = {k: "..." for k in required}
  if not isinstance(body, dict):
    raise HTTPError(400, f"The body must be a JSON object, like {json.dumps(example)}.")
  unknown = sorted(set(body) - {f.name for f in fields})
  if unknown:
    raise HTTPError(400, f"Unknown field(s): {', '.join(k[:40] for k in unknown[:10])}. Known: "
                         f"{', '.join(f.name for f in fields)}.", unknown[0][:100])
  missing = [k for k in required if k not in body]
  if missing:
    raise HTTPError(400, f"Missing field(s): {', '.join(missing)}. Send e.g. {json.dumps(example)}.", missing[0])
  values = {}
  for f in fields:
    value = body.get(f.name)
    if value is None and f.default is not REQUIRED:
      values[f.name] = _of(f.default, limits)
    else:
      values[f.name] = f.metadata["check"](value, f.name, limits)
  request = request_type(**values)
  if hasattr(request, "check"):
    request.check(limits)
  return request


def describe(request_type, limits):
  """{field: what it takes}, from the declarations."""
  out = {}
  for f in dataclasses.fields(request_type):
    check, default = f.metadata["check"], _of(f.default, limits)
    what = check.describe(limits) if isinstance(check, Number) else ""
    default = ("required" if default is REQUIRED else "" if default is None or isinstance(default, stops.Stops)
               else f"default {json.dumps(default)}")
    out[f.name] = "; ".join(p for p in (f.metadata["meaning"], what, default) if p)
  return out
