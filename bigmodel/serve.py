"""Serves an exported model over HTTP: `python -m bigmodel.serve --model=model_dir --port=8000`.

JSON endpoints (bigmodel/export.py makes the model dir):

  GET  /healthz       {"status": "ok"}
  GET  /v1/model      what the model expects: task, input, labels, buckets, limits
  POST /v1/classify   {"input": [[...], ...]} (an array of the input's shape) or {"text": "..."}
                      -> {"label": "7", "probabilities": {"0": 0.01, ...}}
  POST /v1/generate   {"prompt": "ROMEO:", "max_new_tokens": 64, "temperature": 1.0, "top_k": 0,
                       "top_p": 1.0, "seed": 0} -> {"text": prompt + completion, "completion": ...}

Requests are batched: one worker thread takes whatever arrived within --batch_wait_ms of the
first (up to the largest batch size), pads it to the next of --batch_sizes (and token ids to the
next of --lengths) and runs the model once. Every bucket is compiled before the server answers.
A generate batch runs until its longest request is done (no continuous batching).
Bad requests get a 4xx and {"error": "..."}; the server stays up.
"""
import concurrent.futures
import http.server
import json
import queue
import socket
import sys
import threading
import time
import traceback
import urllib.parse

import numpy as np
from absl import flags, logging

from bigmodel import artifact, errors


class HTTPError(Exception):
  def __init__(self, status, message):
    super().__init__(message)
    self.status = status


class Batcher:
  """Runs `run(items) -> results` on one worker thread, over the requests that arrived together:
  after the first it waits up to `wait_s` for more, up to `max_batch`."""

  def __init__(self, run, max_batch, wait_s, max_queue=1024):
    self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
    self.queue = queue.Queue(max_queue)
    self.batches = self.requests = 0  # run so far: requests / batches is the batching achieved
    threading.Thread(target=self._loop, name="batcher", daemon=True).start()

  def submit(self, item, timeout):
    future = concurrent.futures.Future()
    try:
      self.queue.put_nowait((item, future))
    except queue.Full:
      raise HTTPError(503, f"The server is busy ({self.queue.maxsize} requests queued); retry shortly.") from None
    try:
      return future.result(timeout)
    except concurrent.futures.TimeoutError:
      future.cancel()  # the worker skips it if it has not started
      raise HTTPError(503, f"The model did not answer within {timeout:g} s; retry, or ask for less.") from None

  def _loop(self):
    while True:
      batch = [self.queue.get()]
      deadline = time.monotonic() + self.wait_s
      while len(batch) < self.max_batch:
        try:
          batch.append(self.queue.get(timeout=max(deadline - time.monotonic(), 0)))
        except queue.Empty:
          break
      batch = [(item, f) for item, f in batch if f.set_running_or_notify_cancel()]
      if not batch:
        continue
      self.batches, self.requests = self.batches + 1, self.requests + len(batch)
      try:
        results = self.run([item for item, _ in batch])
      except Exception as e:  # answered as a 500 to each request; the worker goes on
        traceback.print_exc()
        for _, f in batch:
          f.set_exception(e)
        continue
      for (_, f), result in zip(batch, results):
        f.set_result(result)


def _fields(body, required, optional):
  """Checks that `body` is a JSON object with the required fields and no unknown ones."""
  example = {k: "..." for k in required}
  if not isinstance(body, dict):
    raise HTTPError(400, f"The body must be a JSON object, like {json.dumps(example)}.")
  unknown = sorted(set(body) - set(required) - set(optional))
  if unknown:
    raise HTTPError(400, f"Unknown field(s): {', '.join(unknown)}. Known: {', '.join([*required, *optional])}.")
  missing = [k for k in required if k not in body]
  if missing:
    raise HTTPError(400, f"Missing field(s): {', '.join(missing)}. Send e.g. {json.dumps(example)}.")


def _number(body, name, default, kind, low, high):
  """body[name] (or `default`), an int or float (per `kind`) in [low, high]."""
  value = body.get(name, default)
  ok_types = (int,) if kind is int else (int, float)
  if isinstance(value, bool) or not isinstance(value, ok_types) or not low <= value <= high:
    raise HTTPError(400, f"{name} must be {'an integer' if kind is int else 'a number'} in [{low}, {high}], "
                         f"got {json.dumps(value)}.")
  return kind(value)


class App:
  """The endpoints over one exported model; the HTTP handler calls them with parsed JSON."""

  def __init__(self, model, max_body_bytes=1_000_000, max_new_tokens=256, batch_wait_ms=2.0,
               request_timeout_s=120.0):
    self.model = model
    self.max_body_bytes, self.max_new_tokens = max_body_bytes, max_new_tokens
    self.request_timeout_s = request_timeout_s
    run = self._classify_batch if model.task == "classify" else self._generate_batch
    self.batcher = Batcher(run, model.batch_sizes[-1], batch_wait_ms / 1000)

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
      request = {"POST /v1/generate": {
          "prompt": f"a string of 1 to {m.context} tokens",
          "max_new_tokens": f"0..{self.max_new_tokens}, default {min(64, self.max_new_tokens)}",
          "temperature": "0 (greedy) or more, default 1.0", "top_k": "0 (all) or more, default 0",
          "top_p": "(0, 1], default 1.0", "seed": f"0..{2 ** 31 - 1}, default 0"}}
      limits = {"max_body_bytes": self.max_body_bytes, "max_prompt_tokens": m.context,
                "max_new_tokens": self.max_new_tokens}
    return {"task": m.task, "input": m.input, "labels": m.labels, "output": m.spec.get("output"),
            "request": request, "batch_sizes": m.batch_sizes, "lengths": m.lengths or None, "limits": limits,
            "source": m.spec.get("source")}

  def _needs(self, task):
    if self.model.task != task:
      other = "/v1/classify" if self.model.task == "classify" else "/v1/generate"
      raise HTTPError(404, f"This model does not {task} (it is a {self.model.task} model): use POST {other}.")

  def classify(self, body):
    self._needs("classify")
    m = self.model
    if m.input["kind"] == "text":
      _fields(body, ["text"], [])
      if not isinstance(body["text"], str):
        raise HTTPError(400, f"text must be a string, got {json.dumps(body['text'])[:100]}.")
      x = self._encode(body["text"])
    else:
      _fields(body, ["input"], [])
      x = self._array(body["input"])
    probs_C = self.batcher.submit(x, self.request_timeout_s)
    best = int(np.argmax(probs_C))
    return {"label": m.labels[best], "index": best,
            "probabilities": {name: float(p) for name, p in zip(m.labels, probs_C)}}

  def _array(self, value):
    shape, dtype = tuple(self.model.input["shape"]), self.model.input["dtype"]
    what = f"a nested list of numbers of shape {list(shape)}"
    try:
      x = np.asarray(value)
    except ValueError:  # ragged
      raise HTTPError(400, f"input must be {what}; its lists have unequal lengths.") from None
    if x.dtype.kind not in "iuf":
      raise HTTPError(400, f"input must be {what}; it holds strings, booleans, nulls or objects.")
    if x.shape != shape:
      raise HTTPError(400, f"input has shape {list(x.shape)}; this model takes {what}.")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():  # JSON's 1e999 parses as infinity
      raise HTTPError(400, "input holds infinite values; send finite numbers.")
    if dtype == "uint8" and ((x != np.round(x)) | (x < 0) | (x > 255)).any():
      raise HTTPError(400, "input must hold integers 0..255 (uint8 pixel values, as in the dataset).")
    return x.astype(dtype)

  def _encode(self, text):
    try:
      return self.model.encode(text)
    except ValueError as e:  # a character the char tokenizer has never seen
      raise HTTPError(400, f"The text cannot be encoded: {e}") from None

  def _classify_batch(self, xs):
    return list(self.model.classify(np.stack(xs)))

  def generate(self, body):
    self._needs("generate")
    _fields(body, ["prompt"], ["max_new_tokens", "temperature", "top_k", "top_p", "seed"])
    if not isinstance(body["prompt"], str):
      raise HTTPError(400, f"prompt must be a string, got {json.dumps(body['prompt'])[:100]}.")
    ids = self._encode(body["prompt"])
    context = self.model.context
    if not 1 <= len(ids) <= context:
      raise HTTPError(400, f"The prompt is {len(ids)} tokens; this model reads 1 to {context} (its context). "
                           + ("Shorten it." if len(ids) else "Send some text."))
    settings = dict(max_new_tokens=_number(body, "max_new_tokens", min(64, self.max_new_tokens), int, 0,
                                           self.max_new_tokens),
                    temperature=_number(body, "temperature", 1.0, float, 0.0, 1e6),
                    top_k=_number(body, "top_k", 0, int, 0, 2 ** 31 - 1),
                    top_p=_number(body, "top_p", 1.0, float, 1e-9, 1.0),
                    seed=_number(body, "seed", 0, int, 0, 2 ** 31 - 1))
    out = self.batcher.submit((ids, settings), self.request_timeout_s)
    return {"text": self.model.decode(out), "completion": self.model.decode(out[len(ids):]),
            "prompt_tokens": len(ids), "new_tokens": len(out) - len(ids)}

  def _generate_batch(self, requests):
    per_row = {k: [s[k] for _, s in requests] for k in requests[0][1]}
    return self.model.generate([ids for ids, _ in requests], **per_row)


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes, size limit and JSON in and out; `self.server.app` does the work."""
  protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
  timeout = 60  # seconds an idle connection is kept
  routes = {"/healthz": ("GET", None), "/v1/model": ("GET", None),
            "/v1/classify": ("POST", "classify"), "/v1/generate": ("POST", "generate")}

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
      if path == "/healthz":
        b = app_.batcher
        result = {"status": "ok", "task": app_.model.task, "queued": b.queue.qsize(), "batches": b.batches,
                  "requests": b.requests}
      elif path == "/v1/model":
        result = app_.info()
      else:
        result = getattr(app_, action)(self._read_json(app_.max_body_bytes))
      self._reply(200, result)
    except HTTPError as e:
      self._reply(e.status, {"error": str(e)})
    except Exception as e:  # a bug, not the client's fault: say so and stay up
      traceback.print_exc()
      self._reply(500, {"error": f"Internal error: {type(e).__name__}: {e}"})

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

  def log_message(self, format, *args):
    if self.server.log_requests:
      super().log_message(format, *args)


def _reject_constant(name):
  raise errors.UserError(f"{name} is not a JSON number")


class Server(http.server.ThreadingHTTPServer):
  """One thread per connection."""
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
  try:
    model = artifact.load(f.model, [int(b) for b in f.batch_sizes], [int(n) for n in f.lengths])
    httpd = make_server(App(model, f.max_body_bytes, f.max_new_tokens, f.batch_wait_ms, f.request_timeout_s),
                        f.host, f.port, f.log_requests)
  except OSError as e:
    raise errors.UserError(f"cannot listen on {f.host}:{f.port} ({e.strerror}). Choose another --port "
                           "(0 = any free one).") from None
  start = time.perf_counter()
  model.warmup()
  host, port = httpd.server_address[:2]
  print(f"Serving {f.model} ({model.task}; batch sizes {model.batch_sizes}"
        f"{f', lengths {model.lengths}' if model.lengths else ''}, compiled in {time.perf_counter() - start:.1f} s) "
        f"on http://{host}:{port}", file=sys.stderr, flush=True)
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()


if __name__ == "__main__":
  flags.DEFINE_string("model", None, "A model dir written by `python -m bigmodel.export`.")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; 0.0.0.0 to accept other machines.")
  flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one (printed at start).")
  flags.DEFINE_list("batch_sizes", ["1", "8", "32"], "Batch sizes compiled at start; a batch is padded up to one.")
  flags.DEFINE_list("lengths", [], "Language models: token lengths compiled at start (the context is added); "
                    "default 16, 32, ... below the context.")
  flags.DEFINE_integer("max_body_bytes", 1_000_000, "Larger request bodies get 413.")
  flags.DEFINE_integer("max_new_tokens", 256, "The most tokens one generate request may ask for.")
  flags.DEFINE_float("batch_wait_ms", 2.0, "How long the batcher waits for more requests after the first.")
  flags.DEFINE_float("request_timeout_s", 120.0, "A request not answered by then gets 503.")
  flags.DEFINE_bool("log_requests", False, "Log every request to stderr.")
  flags.mark_flags_as_required(["model"])
  errors.run(main)
