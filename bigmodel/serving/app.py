"""What the server answers over one exported model: `App.routes()` is the table the transport (http.py)
serves. Each endpoint parses its request (requests.py), hands it to the model's worker (batching.py),
and shapes the reply (openai.py for OpenAI's API); the command line is bigmodel/serve.py.

A language model's request has two limits, so that a long reply that is making progress is never cut:
`queue_timeout_s`, the longest it waits with none of its sequences decoding (for a free row), and
`token_timeout_s`, the longest it waits for its next token while one is decoding (a stalled model).
Past either it gets a 503. A request whose client has gone (`client_gone()`, which the transport
gives each POST, looked at every POLL_S while the request waits) gives up its sequences: their rows
and queue places go to the next requests at once.
"""
import functools
import queue
import random
import time

import numpy as np

from bigmodel.serving import batching, chat, openai, requests
from bigmodel.serving.http import ClientGone, HTTPError
from bigmodel.serving.options import Options

POLL_S = 0.1  # how often a waiting request looks whether its client has gone


class App:
  """The endpoints over one exported model (an artifact.Artifact), within `options`' limits."""

  def __init__(self, model, options=Options()):
    self.model, self.options, self.name = model, options, options.name
    self.created = int(time.time())
    generates = model.task == "generate"
    self.limits = requests.Limits(
        name=self.name, max_new_tokens=options.max_new_tokens, max_queue=options.max_queue, input=model.input,
        context=model.context if generates else 0, vocab_size=model.input.get("vocab_size", 0),
        encode=model.encode, decode=model.decode if model.tokenizer else None)
    if generates:
      self.worker = batching.Generator(model, options.slots, options.max_queue)
    else:
      self.worker = batching.Batcher(self._classify_batch, model.batch_sizes[-1], options.batch_wait_ms / 1000,
                                     options.max_queue)

  def routes(self):
    """The transport's table: {path: (method, function)}."""
    return {"/healthz": ("GET", self.health), "/v1/model": ("GET", self.info), "/v1/models": ("GET", self.models),
            "/v1/classify": ("POST", self.classify), "/v1/completions": ("POST", self.completions),
            "/v1/generate": ("POST", self.generate),
            "/v1/chat/completions": ("POST", functools.partial(chat.completions, self))}  # serving/chat.py

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
    m, o = self.model, self.options
    if m.task == "classify":
      request = {"POST /v1/classify": requests.describe(self._classify_request(), self.limits)}
      limits = {"max_body_bytes": o.max_body_bytes}
    else:
      request = {"POST /v1/completions": requests.describe(requests.Completion, self.limits),
                 "POST /v1/generate": requests.describe(requests.Generate, self.limits),
                 "POST /v1/chat/completions": requests.describe(chat.ChatCompletion, self.limits)}
      limits = {"max_body_bytes": o.max_body_bytes, "max_prompt_tokens": m.context,
                "max_new_tokens": o.max_new_tokens, "slots": self.worker.slots.n, "max_queue": self.worker.max_queue}
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

  def _classify_request(self):
    return requests.ClassifyText if self.model.input["kind"] == "text" else requests.ClassifyInput

  def classify(self, body, client_gone):
    del client_gone  # answered within one batch of the model, a short wait: not watched
    self._needs("classify")
    request = requests.parse(self._classify_request(), body, self.limits)
    x = request.text if isinstance(request, requests.ClassifyText) else request.input
    probs_C = self._wait(lambda: self.worker.submit(x, self.options.queue_timeout_s))
    best, labels = int(np.argmax(probs_C)), self.model.labels
    return {"label": labels[best], "index": best,
            "probabilities": {name: float(p) for name, p in zip(labels, probs_C)}}

  def _classify_batch(self, xs):
    return list(self.model.classify(np.stack(xs)))

  @staticmethod
  def _wait(submit):
    """submit()'s result, with a full queue and a timeout as 503s."""
    try:
      return submit()
    except (batching.Busy, TimeoutError) as e:
      raise HTTPError(503, str(e)) from None

  def _stop_ids(self, request):
    """The tokens the request's sequences stop at: the model's end-of-text token, unless `ignore_eos`."""
    return () if request.ignore_eos or self.model.eos_id is None else (self.model.eos_id,)

  def completions(self, body, client_gone):
    """OpenAI's POST /v1/completions: a reply, or (stream) the server-sent events of one."""
    self._needs("generate")
    r = requests.parse(requests.Completion, body, self.limits)
    seed = random.randrange(requests.SEED_RANGE.high) if r.seed is None else r.seed
    inbox = queue.SimpleQueue()  # the worker's events for the request's sequences
    seqs = [batching.Sequence(i * r.n + j, ids, inbox, max_tokens=r.max_tokens, temperature=r.temperature,
                              top_p=r.top_p, seed=seed + j, stop=r.stop, stop_ids=self._stop_ids(r),
                              decode=self.model.decode)
            for i, (_, ids) in enumerate(r.prompt) for j in range(r.n)]  # choice j of a prompt: seed + j
    self._wait(lambda: self.worker.submit(seqs))
    reply, events = openai.Completion(self.name, self.model.decode, r, seqs), self.events(inbox, seqs, client_gone)
    return openai.stream(map(reply.chunk, events)) if r.stream else reply.whole(events)

  def generate(self, body, client_gone):
    self._needs("generate")
    r = requests.parse(requests.Generate, body, self.limits)
    seq = batching.Sequence(0, r.prompt, queue.SimpleQueue(), max_tokens=r.max_new_tokens,
                            temperature=r.temperature, top_k=r.top_k, top_p=r.top_p, seed=r.seed,
                            stop_ids=self._stop_ids(r), decode=self.model.decode)
    self._wait(lambda: self.worker.submit([seq]))
    finish_reason = None
    for event in self.events(seq.events, [seq], client_gone):
      finish_reason = getattr(event, "finish_reason", None) or finish_reason
    kept = seq.text_tokens()  # without the end-of-text token
    return {"text": self.model.decode([*r.prompt, *kept]), "completion": self.model.decode(kept),
            "prompt_tokens": len(r.prompt), "new_tokens": len(seq.tokens), "finish_reason": finish_reason}

  def events(self, events, seqs, client_gone):
    """The worker's Events and Prompts for `seqs` until all have finished, within the request's two
    limits (the module's docstring). Those left unfinished are cancelled if the reader stops early (a
    streaming client has gone), a limit passes, or client_gone()."""
    left, decoding = len(seqs), 0  # sequences unfinished; started (their Prompt came) and unfinished
    last = time.monotonic()  # when the latest event came (at first: about when the request was queued)
    look = last + POLL_S  # when to look at the client's connection next
    try:
      while left:
        limit = self.options.token_timeout_s if decoding else self.options.queue_timeout_s
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
