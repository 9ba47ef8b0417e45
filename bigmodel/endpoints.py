"""What the server answers over one exported model: `App`'s endpoints take parsed JSON and
return a reply (a dict) or the data of server-sent events (a generator), and check every field
(bigmodel/http_server.py carries them over HTTP; bigmodel/serve.py is the command line).

Endpoints (bigmodel/export.py makes the model dir):

  GET  /healthz         {"status": "ok", ...the worker's counters; a language model's buckets_compiled
                        of its buckets (the rest compile in the background)}
  GET  /v1/model        what the model expects: task, input, labels, buckets, limits
  POST /v1/classify     {"input": [[...], ...]} (an array of the input's shape) or {"text": "..."}
                        -> {"label": "7", "probabilities": {"0": 0.01, ...}}
  GET  /v1/models       OpenAI's list of models: this one, named --model_name
  POST /v1/completions  OpenAI's completions API: model, prompt (a string, a list of them, or token
                        ids), max_tokens, temperature, top_p, n, stop, seed, stream (server-sent
                        events, a chunk per token, then `data: [DONE]`), logprobs (0 to 5), echo,
                        ignore_eos (vLLM's: go on past the end-of-text token)
  POST /v1/generate     {"prompt": "ROMEO:", "max_new_tokens": 64, "temperature": 1.0, "top_k": 0,
                         "top_p": 1.0, "seed": 0, "ignore_eos": false}
                        -> {"text": prompt + completion, "completion": ..., "finish_reason": ...}

A completion ends at the model's end-of-text token (model.json's input.eos_id: GPT-2's
<|endoftext|>; a char tokenizer has none) with finish_reason "stop", its text left out as OpenAI
leaves it; at max_tokens (or the end of the context) with "length".

Errors come in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with a 4xx for the
client's mistakes (503: the queue is full); the server stays up.

A language model's request has two limits, so that a long reply that is making progress is never cut:
`queue_timeout_s`, the longest it waits with none of its sequences decoding (for a free row), and
`token_timeout_s`, the longest it waits for its next token while one is decoding (a stalled model).
Past either it gets a 503. A request whose client has gone (`client_gone()`, which the transport
gives each POST, looked at every POLL_S while the request waits) gives up its sequences: their rows
and queue places go to the next requests at once.
"""
import json
import queue
import random
import time
import traceback
import uuid

import numpy as np

from bigmodel import batching, decoding, sampling


class HTTPError(Exception):
  def __init__(self, status, message, param=None, code=None):
    super().__init__(message)
    self.status, self.param, self.code = status, param, code

  def body(self):
    kind = "invalid_request_error" if self.status < 500 else "server_error"
    return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


class ClientGone(Exception):
  """The client closed its connection while its request waited: there is no one to answer."""


def internal_error(e):
  """The 500 of a bug (ours, not the client's), naming it."""
  return HTTPError(500, f"Internal error: {type(e).__name__}: {e}")


def _fields(body, required, optional):
  """Checks that `body` is a JSON object with the required fields and no unknown ones."""
  example = {k: "..." for k in required}
  if not isinstance(body, dict):
    raise HTTPError(400, f"The body must be a JSON object, like {json.dumps(example)}.")
  unknown = sorted(set(body) - set(required) - set(optional))
  if unknown:
    raise HTTPError(400, f"Unknown field(s): {', '.join(unknown)}. Known: {', '.join([*required, *optional])}.",
                    unknown[0])
  missing = [k for k in required if k not in body]
  if missing:
    raise HTTPError(400, f"Missing field(s): {', '.join(missing)}. Send e.g. {json.dumps(example)}.", missing[0])


def _number(body, name, default, kind, low, high):
  """body[name] (or `default` if absent or null), an int or float (per `kind`) in [low, high]."""
  value = body.get(name)
  value = default if value is None else value
  ok_types = (int,) if kind is int else (int, float)
  if isinstance(value, bool) or not isinstance(value, ok_types) or not low <= value <= high:
    raise HTTPError(400, f"{name} must be {'an integer' if kind is int else 'a number'} in [{low}, {high}], "
                         f"got {json.dumps(value)}.", name)
  return kind(value)


def _flag(body, name):
  value = body.get(name) or False
  if not isinstance(value, bool):
    raise HTTPError(400, f"{name} must be true or false, got {json.dumps(value)}.", name)
  return value


def _stop(value):
  """OpenAI's `stop`: a string or a list of up to 4, none empty."""
  stops = [] if value is None else [value] if isinstance(value, str) else value
  if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
    raise HTTPError(400, f"stop must be a non-empty string or a list of up to 4 of them, got "
                         f"{json.dumps(value)[:100]}.", "stop")
  return stops


POLL_S = 0.1  # how often a waiting request looks whether its client has gone

# OpenAI fields this server takes only at their neutral value (clients send them anyway).
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "best_of": 1, "logit_bias": {}, "suffix": None}


class App:
  """The endpoints over one exported model; the HTTP handler calls them with parsed JSON."""

  def __init__(self, model, name="model", max_body_bytes=1_000_000, max_new_tokens=256, batch_wait_ms=2.0,
               queue_timeout_s=120.0, token_timeout_s=60.0, slots=16, max_queue=256):
    self.model, self.name = model, name
    self.max_body_bytes, self.max_new_tokens = max_body_bytes, max_new_tokens
    self.queue_timeout_s, self.token_timeout_s = queue_timeout_s, token_timeout_s
    self.created = int(time.time())
    if model.task == "classify":
      self.worker = batching.Batcher(self._classify_batch, model.batch_sizes[-1], batch_wait_ms / 1000, max_queue)
    else:
      self.worker = batching.Generator(model, slots, max_queue)

  def warmup(self, background=True):
    """Compiles what the first requests need (a language model: its cheapest buckets; the rest on a
    background thread, which /healthz counts, returned); `background=False` compiles every bucket now."""
    return self.model.warmup(getattr(self.worker, "slots", None), background)

  def health(self):
    compiled = {}
    if self.model.task == "generate":
      slots = self.worker.slots
      compiled = {"buckets_compiled": len(slots.compiled()), "buckets": len(slots.buckets())}
    return {"status": "ok", "task": self.model.task, **self.worker.counts(), **compiled}

  def info(self):
    m = self.model
    if m.task == "classify":
      if m.input["kind"] == "text":
        field = {"text": f"a string (its first {m.input['shape'][0]} tokens are read)"}
      else:
        field = {"input": f"numbers ({m.input['dtype']}), nested as shape {m.input['shape']}"}
      request = {"POST /v1/classify": field}
      limits = {"max_body_bytes": self.max_body_bytes}
    else:
      request = {"POST /v1/completions": "OpenAI's completions API (GET /v1/models for the model's name)",
                 "POST /v1/generate": {
                     "prompt": f"a string of 1 to {m.context} tokens",
                     "max_new_tokens": f"0..{self.max_new_tokens}, default {min(64, self.max_new_tokens)}",
                     "temperature": "0 (greedy) or more, default 1.0", "top_k": "0 (all) or more, default 0",
                     "top_p": "(0, 1], default 1.0", "seed": f"0..{2 ** 31 - 1}, default 0",
                     "ignore_eos": "true or false, default false"}}
      limits = {"max_body_bytes": self.max_body_bytes, "max_prompt_tokens": m.context,
                "max_new_tokens": self.max_new_tokens, "slots": self.worker.slots.n,
                "max_queue": self.worker.max_queue}
    return {"task": m.task, "input": m.input, "labels": m.labels, "output": m.spec.get("output"),
            "request": request, "batch_sizes": m.batch_sizes, "lengths": m.lengths or None, "limits": limits,
            "source": m.spec.get("source")}

  def models(self):
    return {"object": "list", "data": [{"id": self.name, "object": "model", "created": self.created,
                                        "owned_by": "bigmodel"}]}

  def _needs(self, task):
    if self.model.task != task:
      other = "/v1/classify" if self.model.task == "classify" else "/v1/completions"
      raise HTTPError(404, f"This model does not {task} (it is a {self.model.task} model): use POST {other}.")

  def classify(self, body, client_gone):
    del client_gone  # answered within one batch of the model, a short wait: not watched
    self._needs("classify")
    m = self.model
    if m.input["kind"] == "text":
      _fields(body, ["text"], [])
      if not isinstance(body["text"], str):
        raise HTTPError(400, f"text must be a string, got {json.dumps(body['text'])[:100]}.", "text")
      x = self._encode(body["text"])
    else:
      _fields(body, ["input"], [])
      x = self._array(body["input"])
    probs_C = self._wait(lambda: self.worker.submit(x, self.queue_timeout_s))
    best = int(np.argmax(probs_C))
    return {"label": m.labels[best], "index": best,
            "probabilities": {name: float(p) for name, p in zip(m.labels, probs_C)}}

  def _array(self, value):
    shape, dtype = tuple(self.model.input["shape"]), self.model.input["dtype"]
    what = f"a nested list of numbers of shape {list(shape)}"
    try:
      x = np.asarray(value)
    except ValueError:  # ragged
      raise HTTPError(400, f"input must be {what}; its lists have unequal lengths.", "input") from None
    if x.dtype.kind not in "iuf":
      raise HTTPError(400, f"input must be {what}; it holds strings, booleans, nulls or objects.", "input")
    if x.shape != shape:
      raise HTTPError(400, f"input has shape {list(x.shape)}; this model takes {what}.", "input")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():  # JSON's 1e999 parses as infinity
      raise HTTPError(400, "input holds infinite values; send finite numbers.", "input")
    if dtype == "uint8" and ((x != np.round(x)) | (x < 0) | (x > 255)).any():
      raise HTTPError(400, "input must hold integers 0..255 (uint8 pixel values, as in the dataset).", "input")
    return x.astype(dtype)

  def _encode(self, text, param="text"):
    try:
      return self.model.encode(text)
    except ValueError as e:  # a character the char tokenizer has never seen
      raise HTTPError(400, f"The text cannot be encoded: {e}", param) from None

  def _classify_batch(self, xs):
    return list(self.model.classify(np.stack(xs)))

  @staticmethod
  def _wait(submit):
    """submit()'s result, with a full queue and a timeout as 503s."""
    try:
      return submit()
    except (batching.Busy, TimeoutError) as e:
      raise HTTPError(503, str(e)) from None

  def _prompt_ids(self, ids, param="prompt"):
    context = self.model.context
    if not 1 <= len(ids) <= context:
      raise HTTPError(400, f"The prompt is {len(ids)} tokens; this model reads 1 to {context} (its context). "
                           + ("Shorten it." if len(ids) else "Send some text."), param)
    return [int(t) for t in ids]

  def _prompts(self, value):
    """OpenAI's `prompt`: a string, a list of strings, a list of token ids or a list of such lists;
    returns [(text, ids)]."""
    vocab = self.model.input["vocab_size"]
    is_ids = lambda v: isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
    if isinstance(value, str) or is_ids(value):
      value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(p, str) or is_ids(p) for p in value):
      raise HTTPError(400, "prompt must be a string, a list of strings, a list of token ids or a list of such "
                           f"lists, got {json.dumps(value)[:100]}.", "prompt")
    prompts = []
    for p in value:
      if isinstance(p, str):
        prompts.append((p, self._prompt_ids(self._encode(p, "prompt"))))
      elif not all(0 <= t < vocab for t in p):
        raise HTTPError(400, f"Token ids must be in [0, {vocab}) (the vocabulary), got {p[:20]}.", "prompt")
      else:
        ids = self._prompt_ids(p)
        prompts.append((self.model.decode(ids), ids))
    return prompts

  def completions(self, body, client_gone):
    """OpenAI's POST /v1/completions: a reply, or (stream) the server-sent events of one."""
    self._needs("generate")
    _fields(body, ["model", "prompt"], ["max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream",
                                        "logprobs", "echo", "user", "ignore_eos", *NEUTRAL])
    if body["model"] != self.name:
      raise HTTPError(404, f"The model {json.dumps(body['model'])[:100]} does not exist: this server serves "
                           f"{self.name!r} (GET /v1/models).", "model", "model_not_found")
    for name, neutral in NEUTRAL.items():
      if body.get(name, neutral) not in (neutral, None):
        raise HTTPError(400, f"{name} is not supported: leave it out (or {json.dumps(neutral)}).", name)
    prompts = self._prompts(body["prompt"])
    n = _number(body, "n", 1, int, 1, 16)
    if len(prompts) * n > self.worker.max_queue:
      raise HTTPError(400, f"{len(prompts)} prompts x n={n} is more sequences than the queue holds "
                           f"({self.worker.max_queue}); send fewer at a time.", "n")
    settings = dict(max_tokens=_number(body, "max_tokens", 16, int, 0, self.max_new_tokens),
                    temperature=_number(body, "temperature", 1.0, float, 0.0, 2.0),
                    top_p=_number(body, "top_p", 1.0, float, 1e-9, 1.0), stop=_stop(body.get("stop")),
                    eos_id=self._eos_id(body))
    seed = _number(body, "seed", random.randrange(2 ** 31 - 16), int, 0, 2 ** 31 - 16)
    logprobs = body.get("logprobs")
    logprobs = None if logprobs is None else _number(body, "logprobs", 0, int, 0, sampling.TOP_LOGPROBS)
    echo, events = _flag(body, "echo"), queue.SimpleQueue()
    seqs = [batching.Sequence(i * n + j, ids, events, seed=seed + j, decode=self.model.decode, **settings)
            for i, (_, ids) in enumerate(prompts) for j in range(n)]  # choice j of a prompt: seed + j
    self._wait(lambda: self.worker.submit(seqs))
    reply = _Completion(self, [text for text, _ in prompts], seqs, events, echo, logprobs, client_gone)
    return reply.stream() if _flag(body, "stream") else reply.whole()

  def generate(self, body, client_gone):
    self._needs("generate")
    _fields(body, ["prompt"], ["max_new_tokens", "temperature", "top_k", "top_p", "seed", "ignore_eos"])
    if not isinstance(body["prompt"], str):
      raise HTTPError(400, f"prompt must be a string, got {json.dumps(body['prompt'])[:100]}.", "prompt")
    ids = self._prompt_ids(self._encode(body["prompt"], "prompt"))
    settings = dict(max_tokens=_number(body, "max_new_tokens", min(64, self.max_new_tokens), int, 0,
                                       self.max_new_tokens),
                    temperature=_number(body, "temperature", 1.0, float, 0.0, 1e6),
                    top_k=_number(body, "top_k", 0, int, 0, 2 ** 31 - 1),
                    top_p=_number(body, "top_p", 1.0, float, 1e-9, 1.0),
                    seed=_number(body, "seed", 0, int, 0, 2 ** 31 - 1), eos_id=self._eos_id(body))
    seq = batching.Sequence(0, ids, queue.SimpleQueue(), decode=self.model.decode, **settings)
    self._wait(lambda: self.worker.submit([seq]))
    finish_reason = None
    for event in self._events(seq.events, [seq], client_gone):
      finish_reason = getattr(event, "finish_reason", None) or finish_reason
    kept = seq.text_tokens()  # without the end-of-text token
    return {"text": self.model.decode([*ids, *kept]), "completion": self.model.decode(kept),
            "prompt_tokens": len(ids), "new_tokens": len(seq.tokens), "finish_reason": finish_reason}

  def _eos_id(self, body):
    """The token the request's sequences stop at: the model's end-of-text token, unless `ignore_eos`."""
    return None if _flag(body, "ignore_eos") else self.model.eos_id

  def _events(self, events, seqs, client_gone):
    """The worker's Events and Prompts for `seqs` until all have finished, within the request's two
    limits (the module's docstring). Those left unfinished are cancelled if the reader stops early (a
    streaming client has gone), a limit passes, or client_gone()."""
    left, decoding = len(seqs), 0  # sequences unfinished; started (their Prompt came) and unfinished
    last = time.monotonic()  # when the latest event came (at first: about when the request was queued)
    look = last + POLL_S  # when to look at the client's connection next
    try:
      while left:
        limit = self.token_timeout_s if decoding else self.queue_timeout_s
        now = time.monotonic()
        if now >= look:
          if client_gone():
            raise ClientGone()
          look = now + POLL_S
        if now >= last + limit:
          raise HTTPError(503, f"The model gave no token within {limit:g} s; retry, or ask for less." if decoding
                          else f"No row was free for this request within {limit:g} s (the server is busy); retry "
                               "shortly.")
        try:
          event = events.get(timeout=min(look, last + limit) - now)
        except queue.Empty:
          continue
        if isinstance(event, Exception):
          raise event
        last = time.monotonic()
        finished = isinstance(event, batching.Event) and event.finish_reason is not None
        decoding += isinstance(event, batching.Prompt) - finished
        left -= finished
        yield event
    finally:
      self.worker.cancel(seqs)  # a finished sequence has left its row already


class _Completion:
  """One /v1/completions request's reply, in OpenAI's shape: whole, or as a stream of chunks."""

  def __init__(self, app_, prompt_texts, seqs, events, echo, logprobs, client_gone):
    self.app, self.seqs, self.events, self.echo, self.logprobs = app_, seqs, events, echo, logprobs
    self.prompt_texts, self.client_gone = prompt_texts, client_gone
    self.head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                 "model": app_.name}

  def _prompt_text(self, index):
    return self.prompt_texts[index // (len(self.seqs) // len(self.prompt_texts))]

  def _logprobs(self, tokens, offsets):
    """OpenAI's logprobs object for (Token or None) tokens at these text offsets."""
    if self.logprobs is None:
      return None
    decode = lambda t: self.app.model.decode([int(t)])
    return {"tokens": [decode(t.id) for t in tokens],
            "token_logprobs": [None if t.logprob is None else float(t.logprob) for t in tokens],
            "top_logprobs": [None if t.top_ids is None else
                             {decode(i): float(lp) for i, lp in zip(t.top_ids[:self.logprobs],
                                                                    t.top_logprobs[:self.logprobs])}
                             for t in tokens],
            "text_offset": offsets}

  def _echoed(self, prompt):
    """The prompt's text and logprobs, echoed: its first token has none (nothing comes before it)."""
    seq = self.seqs[prompt.index]
    tokens = [decoding.Token(seq.ids[0], None, None, None), *prompt.tokens]
    offsets = [len(self.app.model.decode(seq.ids[:j])) for j in range(len(seq.ids))]
    return self._prompt_text(prompt.index), tokens, offsets

  def _chunk(self, event):
    """The stream's chunk for an Event or (echo) a Prompt; None for a Prompt without echo."""
    if isinstance(event, batching.Prompt):
      if not self.echo:
        return None
      text, tokens, offsets = self._echoed(event)
      return self._choices(event.index, text, self._logprobs(tokens, offsets), None)
    skip = len(self._prompt_text(event.index)) if self.echo else 0
    tokens = [] if event.token is None else [event.token]
    return self._choices(event.index, event.text, self._logprobs(tokens, [skip + event.offset] * len(tokens)),
                         event.finish_reason)

  def _choices(self, index, text, logprobs, finish_reason):
    return {**self.head, "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                      "finish_reason": finish_reason}]}

  def stream(self):
    """Server-sent events' data: a chunk per token, then [DONE]. A failure once the reply has begun (its
    status sent) is the last event before [DONE], in OpenAI's error shape: the openai client raises it (an
    APIError), and a client that reads to [DONE], as vLLM's streams end too, is not left waiting."""
    try:
      for event in self.app._events(self.events, self.seqs, self.client_gone):
        chunk = self._chunk(event)
        if chunk is not None:
          yield json.dumps(chunk, ensure_ascii=False)
    except HTTPError as e:
      yield json.dumps(e.body())
    except ClientGone:  # for the transport: nothing more to write
      raise
    except Exception as e:  # the worker's failure (a bug): not a 500 reply written inside this one
      traceback.print_exc()
      yield json.dumps(internal_error(e).body())
    yield "[DONE]"

  def whole(self):
    choices = {}
    for event in self.app._events(self.events, self.seqs, self.client_gone):
      chunk = self._chunk(event)
      if chunk is None:
        continue
      choice = chunk["choices"][0]
      whole = choices.setdefault(choice["index"], {**choice, "text": ""})
      whole["text"] += choice["text"]
      whole["finish_reason"] = choice["finish_reason"]
      if self.logprobs is not None and whole["logprobs"] is not choice["logprobs"]:
        for key, values in choice["logprobs"].items():
          whole["logprobs"][key] += values
    for seq in self.seqs:  # the text of a finished sequence, not the sum of what was held back
      choices[seq.index]["text"] = (self._prompt_text(seq.index) if self.echo else "") + seq.text
    prompt_tokens = sum(len(s.ids) for s in self.seqs[::len(self.seqs) // len(self.prompt_texts)])
    completion_tokens = sum(len(s.tokens) for s in self.seqs)
    return {**self.head, "choices": [choices[i] for i in range(len(self.seqs))],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}
