"""Serves an exported model over HTTP: `python -m bigmodel.serve --model=model_dir --port=8000`.

Endpoints (bigmodel/export.py makes the model dir):

  GET  /healthz         {"status": "ok", ...the worker's counters}
  GET  /v1/model        what the model expects: task, input, labels, buckets, limits
  POST /v1/classify     {"input": [[...], ...]} (an array of the input's shape) or {"text": "..."}
                        -> {"label": "7", "probabilities": {"0": 0.01, ...}}
  GET  /v1/models       OpenAI's list of models: this one, named --model_name
  POST /v1/completions  OpenAI's completions API: model, prompt (a string, a list of them, or token
                        ids), max_tokens, temperature, top_p, n, stop, seed, stream (server-sent
                        events, a chunk per token, then `data: [DONE]`), logprobs (0 to 5), echo
  POST /v1/generate     {"prompt": "ROMEO:", "max_new_tokens": 64, "temperature": 1.0, "top_k": 0,
                         "top_p": 1.0, "seed": 0} -> {"text": prompt + completion, "completion": ...}

Classify requests are batched (batching.Batcher: what arrived within --batch_wait_ms, padded to
the next of --batch_sizes). Language models decode with continuous batching (batching.Generator:
--slots KV-cache rows; a request joins at the next token and leaves when it is done). Every bucket
is compiled before the server answers. Errors come in OpenAI's shape, {"error": {"message", "type",
"param", "code"}}, with a 4xx for the client's mistakes (503: the queue is full); the server stays up.
"""
import http.server
import json
import os
import queue
import random
import socket
import sys
import time
import traceback
import urllib.parse
import uuid

import numpy as np
from absl import flags, logging

from bigmodel import artifact, batching, errors, sampling


class HTTPError(Exception):
  def __init__(self, status, message, param=None, code=None):
    super().__init__(message)
    self.status, self.param, self.code = status, param, code

  def body(self):
    kind = "invalid_request_error" if self.status < 500 else "server_error"
    return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


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


# OpenAI fields this server takes only at their neutral value (clients send them anyway).
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "best_of": 1, "logit_bias": {}, "suffix": None}


class App:
  """The endpoints over one exported model; the HTTP handler calls them with parsed JSON."""

  def __init__(self, model, name="model", max_body_bytes=1_000_000, max_new_tokens=256, batch_wait_ms=2.0,
               request_timeout_s=120.0, slots=16, max_queue=256):
    self.model, self.name = model, name
    self.max_body_bytes, self.max_new_tokens = max_body_bytes, max_new_tokens
    self.request_timeout_s, self.created = request_timeout_s, int(time.time())
    if model.task == "classify":
      self.worker = batching.Batcher(self._classify_batch, model.batch_sizes[-1], batch_wait_ms / 1000, max_queue)
    else:
      self.worker = batching.Generator(model, slots, max_queue)

  def warmup(self):
    self.model.warmup(getattr(self.worker, "slots", None))

  def health(self):
    return {"status": "ok", "task": self.model.task, **self.worker.counts()}

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
                     "top_p": "(0, 1], default 1.0", "seed": f"0..{2 ** 31 - 1}, default 0"}}
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

  def classify(self, body):
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
    probs_C = self._wait(lambda: self.worker.submit(x, self.request_timeout_s))
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

  def completions(self, body):
    """OpenAI's POST /v1/completions: a reply, or (stream) the server-sent events of one."""
    self._needs("generate")
    _fields(body, ["model", "prompt"], ["max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream",
                                        "logprobs", "echo", "user", *NEUTRAL])
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
                    top_p=_number(body, "top_p", 1.0, float, 1e-9, 1.0), stop=_stop(body.get("stop")))
    seed = _number(body, "seed", random.randrange(2 ** 31 - 16), int, 0, 2 ** 31 - 16)
    logprobs = body.get("logprobs")
    logprobs = None if logprobs is None else _number(body, "logprobs", 0, int, 0, sampling.TOP_LOGPROBS)
    echo, events = _flag(body, "echo"), queue.SimpleQueue()
    seqs = [batching.Sequence(i * n + j, ids, events, seed=seed + j, decode=self.model.decode, **settings)
            for i, (_, ids) in enumerate(prompts) for j in range(n)]  # choice j of a prompt: seed + j
    self._wait(lambda: self.worker.submit(seqs))
    reply = _Completion(self, [text for text, _ in prompts], seqs, events, echo, logprobs)
    return reply.stream() if _flag(body, "stream") else reply.whole()

  def generate(self, body):
    self._needs("generate")
    _fields(body, ["prompt"], ["max_new_tokens", "temperature", "top_k", "top_p", "seed"])
    if not isinstance(body["prompt"], str):
      raise HTTPError(400, f"prompt must be a string, got {json.dumps(body['prompt'])[:100]}.", "prompt")
    ids = self._prompt_ids(self._encode(body["prompt"], "prompt"))
    settings = dict(max_tokens=_number(body, "max_new_tokens", min(64, self.max_new_tokens), int, 0,
                                       self.max_new_tokens),
                    temperature=_number(body, "temperature", 1.0, float, 0.0, 1e6),
                    top_k=_number(body, "top_k", 0, int, 0, 2 ** 31 - 1),
                    top_p=_number(body, "top_p", 1.0, float, 1e-9, 1.0),
                    seed=_number(body, "seed", 0, int, 0, 2 ** 31 - 1))
    seq = batching.Sequence(0, ids, queue.SimpleQueue(), decode=self.model.decode, **settings)
    self._wait(lambda: self.worker.submit([seq]))
    for _ in _events(seq.events, [seq], self.request_timeout_s):
      pass
    return {"text": self.model.decode([*ids, *seq.tokens]), "completion": self.model.decode(seq.tokens),
            "prompt_tokens": len(ids), "new_tokens": len(seq.tokens)}


def _events(events, seqs, timeout):
  """The worker's Events and Prompts for `seqs` until all have finished; cancels those left
  unfinished if the reader stops early (its client has gone) or `timeout` s pass."""
  deadline, left = time.monotonic() + timeout, len(seqs)
  try:
    while left:
      try:
        event = events.get(timeout=max(deadline - time.monotonic(), 0))
      except queue.Empty:
        raise HTTPError(503, f"The model did not answer within {timeout:g} s; retry, or ask for less.") from None
      if isinstance(event, Exception):
        raise event
      left -= isinstance(event, batching.Event) and event.finish_reason is not None
      yield event
  finally:
    for seq in seqs:
      seq.cancel()  # a finished sequence has left its row already


class _Completion:
  """One /v1/completions request's reply, in OpenAI's shape: whole, or as a stream of chunks."""

  def __init__(self, app_, prompt_texts, seqs, events, echo, logprobs):
    self.app, self.seqs, self.events, self.echo, self.logprobs = app_, seqs, events, echo, logprobs
    self.prompt_texts = prompt_texts
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
    tokens = [artifact.Token(seq.ids[0], None, None, None), *prompt.tokens]
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
    """Server-sent events' data: a chunk per token, then [DONE]."""
    try:
      for event in _events(self.events, self.seqs, self.app.request_timeout_s):
        chunk = self._chunk(event)
        if chunk is not None:
          yield json.dumps(chunk, ensure_ascii=False)
    except HTTPError as e:  # the reply has begun: the error is the last event
      yield json.dumps(e.body())
    yield "[DONE]"

  def whole(self):
    choices = {}
    for event in _events(self.events, self.seqs, self.app.request_timeout_s):
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


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes, size limit, JSON and server-sent events in and out; `self.server.app` does the work."""
  protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
  timeout = 60  # seconds an idle connection is kept
  routes = {"/healthz": ("GET", "health"), "/v1/model": ("GET", "info"), "/v1/models": ("GET", "models"),
            "/v1/classify": ("POST", "classify"), "/v1/completions": ("POST", "completions"),
            "/v1/generate": ("POST", "generate")}

  def setup(self):
    super().setup()
    # Send each reply at once: with Nagle's algorithm the body, written after the headers,
    # waits for the client's delayed ACK (40 ms).
    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

  def do_GET(self):
    self._handle("GET")

  def do_POST(self):
    self._handle("POST")

  def do_PUT(self):
    self._handle("PUT")

  def do_DELETE(self):
    self._handle("DELETE")

  def _handle(self, method):
    app_ = self.server.app
    self.body_read = False
    try:
      path = urllib.parse.urlsplit(self.path).path
      if path not in self.routes:
        raise HTTPError(404, f"No endpoint {path}. Endpoints: " +
                        ", ".join(f"{m} {p}" for p, (m, _) in self.routes.items()) + ".")
      allowed, action = self.routes[path]
      if method != allowed:
        raise HTTPError(405, f"{path} takes {allowed}, not {method}.")
      if method == "GET":
        result = getattr(app_, action)()
      else:
        result = getattr(app_, action)(self._read_json(app_.max_body_bytes))
      if isinstance(result, dict):
        self._reply(200, result)
      else:
        self._stream(result)
    except HTTPError as e:
      self._reply(e.status, e.body())
    except Exception as e:  # a bug, not the client's fault: say so and stay up
      traceback.print_exc()
      self._reply(500, HTTPError(500, f"Internal error: {type(e).__name__}: {e}").body())

  def _read_json(self, limit):
    if "chunked" in self.headers.get("Transfer-Encoding", ""):
      raise HTTPError(411, "Chunked bodies are not accepted: send a Content-Length.")
    try:
      length = int(self.headers.get("Content-Length", ""))
    except ValueError:
      raise HTTPError(411, "A POST needs a Content-Length header.") from None
    if length < 0:
      raise HTTPError(400, f"Content-Length {length} is negative.")
    if length > limit:
      if length <= 64 * limit:  # read it anyway: a client still sending would miss the answer
        for start in range(0, length, 1 << 16):
          self.rfile.read(min(1 << 16, length - start))
        self.body_read = True
      raise HTTPError(413, f"The body is {length:,} bytes; the limit is {limit:,} (serve --max_body_bytes).")
    body = self.rfile.read(length)
    self.body_read = True
    try:
      return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
      raise HTTPError(400, f"The body is not valid JSON: {e}.") from None

  def _reply(self, status, obj):
    if self.command != "GET" and not self.body_read:
      self.close_connection = True  # an unread body would be read as the next request
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    if status == 405:
      self.send_header("Allow", self.routes[urllib.parse.urlsplit(self.path).path][0])
    if self.close_connection:
      self.send_header("Connection", "close")
    self.end_headers()
    self.wfile.write(data)

  def _stream(self, events):
    """Server-sent events, each written as it comes (chunked, so the connection stays open). A
    client that has gone shows as a failed write: closing `events` then frees its sequences' rows."""
    self.send_response(200)
    self.send_header("Content-Type", "text/event-stream")
    self.send_header("Cache-Control", "no-cache")
    self.send_header("Transfer-Encoding", "chunked")
    self.end_headers()
    try:
      for data in events:
        message = f"data: {data}\n\n".encode("utf-8")
        self.wfile.write(b"%x\r\n%s\r\n" % (len(message), message))
      self.wfile.write(b"0\r\n\r\n")
    except OSError:  # BrokenPipeError, ConnectionResetError
      self.close_connection = True
    finally:
      events.close()

  def log_message(self, format, *args):
    if self.server.log_requests:
      super().log_message(format, *args)


def _reject_constant(name):
  raise errors.UserError(f"{name} is not a JSON number")


class Server(http.server.ThreadingHTTPServer):
  """One thread per connection: a slow client holds up its own thread only."""
  daemon_threads = True
  request_queue_size = 128  # connections waiting to be accepted; beyond it clients are refused


def make_server(app_, host="127.0.0.1", port=8000, log_requests=False):
  """The server of `app_`, bound to host:port (0 = a free port)."""
  httpd = Server((host, port), Handler)
  httpd.app, httpd.log_requests = app_, log_requests
  return httpd


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  model = artifact.load(f.model, [int(b) for b in f.batch_sizes], [int(n) for n in f.lengths])
  if f.slots < 1 or f.max_queue < 1:
    raise errors.UserError(f"--slots and --max_queue must be >= 1, got {f.slots} and {f.max_queue}.")
  app_ = App(model, f.model_name or os.path.basename(os.path.abspath(f.model)), f.max_body_bytes,
             f.max_new_tokens, f.batch_wait_ms, f.request_timeout_s, f.slots, f.max_queue)
  try:
    httpd = make_server(app_, f.host, f.port, f.log_requests)
  except OSError as e:
    raise errors.UserError(f"cannot listen on {f.host}:{f.port} ({e.strerror}). Choose another --port "
                           "(0 = any free one).") from None
  start = time.perf_counter()
  app_.warmup()
  host, port = httpd.server_address[:2]
  buckets = (f"{f.slots} slots, prompt lengths {model.lengths}" if model.task == "generate" else
             f"batch sizes {model.batch_sizes}")
  print(f"Serving {f.model} as {app_.name!r} ({model.task}; {buckets}, compiled in "
        f"{time.perf_counter() - start:.1f} s) on http://{host}:{port}", file=sys.stderr, flush=True)
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()


if __name__ == "__main__":
  flags.DEFINE_string("model", None, "A model dir written by `python -m bigmodel.export`.")
  flags.DEFINE_string("model_name", "", "The model's name in /v1/models and requests; default the dir's name.")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; 0.0.0.0 to accept other machines.")
  flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one (printed at start).")
  flags.DEFINE_list("batch_sizes", ["1", "8", "32"], "Batch sizes compiled at start; a batch is padded up to one "
                    "(language models: the rows a decode step runs, those below --slots and --slots).")
  flags.DEFINE_list("lengths", [], "Language models: prompt lengths, and lengths a decode step attends over, "
                    "compiled at start (the context is added); default 16, 32, ... below the context.")
  flags.DEFINE_integer("slots", 16, "Language models: sequences decoded together (KV-cache rows); more wait.")
  flags.DEFINE_integer("max_queue", 256, "Requests (language models: sequences) that may wait; more get 503.")
  flags.DEFINE_integer("max_body_bytes", 1_000_000, "Larger request bodies get 413.")
  flags.DEFINE_integer("max_new_tokens", 256, "The most tokens one request may ask for (max_tokens).")
  flags.DEFINE_float("batch_wait_ms", 2.0, "Classifiers: how long the batcher waits for more requests after the first.")
  flags.DEFINE_float("request_timeout_s", 120.0, "A request not answered by then gets 503.")
  flags.DEFINE_bool("log_requests", False, "Log every request to stderr.")
  flags.mark_flags_as_required(["model"])
  errors.run(main)
