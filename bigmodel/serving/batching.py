"""How the server's requests share model calls, on one worker thread per model.

`Batcher` (classifiers): after the first request it waits up to `wait_s` for more, and runs them
as one batch. `Generator` (language models): continuous batching over a fixed set of KV-cache
rows (decoding.Slots). Between two decode steps, waiting sequences join free rows (their prompts
prefilled together) and finished ones leave, so a short request never waits for a long one.
A sequence finishes at its max_tokens, at a stop string (stops.py) or the model's end-of-text token
(whose text it leaves out, as OpenAI's API does), at the end of the context, or when its request
gives up on it (`Generator.cancel`: its client has gone, or a limit has passed): one still waiting
leaves the queue at once, freeing its place for the next request, and one decoding frees its row at
the next token.
"""
import collections
import concurrent.futures
import queue
import threading
import time
import traceback

from bigmodel import decoding
from bigmodel.serving import stops


class Busy(Exception):
  """The queue is full: the server answers 503."""


class Batcher:
  """Runs `run(items) -> results` on one worker thread, over the requests that arrived together:
  after the first it waits up to `wait_s` for more, up to `max_batch`."""

  def __init__(self, run, max_batch, wait_s, max_queue=1024):
    self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
    self.queue = queue.Queue(max_queue)
    self.batches = self.requests = 0  # run so far: requests / batches is the batching achieved
    threading.Thread(target=self._loop, name="batcher", daemon=True).start()

  def counts(self):
    return {"queued": self.queue.qsize(), "batches": self.batches, "requests": self.requests}

  def submit(self, item, timeout):
    """The item's result; Busy if the queue is full, TimeoutError if not answered within `timeout` s."""
    future = concurrent.futures.Future()
    try:
      self.queue.put_nowait((item, future))
    except queue.Full:
      raise Busy(f"The server is busy ({self.queue.maxsize} requests queued); retry shortly.") from None
    try:
      return future.result(timeout)
    except concurrent.futures.TimeoutError:
      future.cancel()  # the worker skips it if it has not started
      raise TimeoutError(f"The model did not answer within {timeout:g} s; retry, or ask for less.") from None

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


# What the worker tells a request, per sequence: a token (with the text it adds, which may be held
# back while it could still be the start of a stop string), and finally why it finished.
Event = collections.namedtuple("Event", "index token text offset finish_reason")
Prompt = collections.namedtuple("Prompt", "index tokens")  # the prompt's tokens and their logprobs, first


class Sequence:
  """One completion: its prompt ids and settings, the tokens drawn so far, and the queue of Events
  its request reads (shared by the request's sequences; `index` tells them apart). It stops at
  any of `stop_ids` (its model's end of text or of turn; empty: at no token) and at its request's stop strings (stops.Stops)."""

  def __init__(self, index, ids, events, *, max_tokens, temperature=1.0, top_k=0, top_p=1.0, seed=0,
               stop=stops.Stops(), stop_ids=(), decode):
    self.index, self.ids, self.events, self.decode = index, ids, events, decode
    self.max_tokens, self.stop_ids, self.watch = max_tokens, frozenset(stop_ids), stops.Watch(stop)
    self.sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    self.tokens, self.text, self.sent = [], "", 0  # sent: characters of `text` already in Events
    self.cancelled = False  # set by Generator.cancel

  def add(self, token, end_of_context):
    """Records a drawn Token and tells the request; returns whether the sequence has finished."""
    self.tokens.append(token.id)
    offset, text = len(self.text), self.decode(self.text_tokens())
    last = token.id in self.stop_ids or len(self.tokens) >= self.max_tokens or end_of_context
    cut, held = self.watch.update(text, final=last)
    stopped = cut is not None or token.id in self.stop_ids
    finish = "stop" if stopped else "length" if last else None
    self.text = text if cut is None else cut
    end = len(self.text) if finish else len(self.text) - held
    self.events.put(Event(self.index, token, self.text[self.sent:end], offset, finish))
    self.sent = max(self.sent, end)
    return finish is not None

  def text_tokens(self):
    """The tokens drawn whose text the request gets: all but the end-of-text (or turn) token that ended it."""
    return self.tokens[:-1] if self.tokens and self.tokens[-1] in self.stop_ids else self.tokens


class Generator:
  """Continuous batching on one worker thread over `slots` KV-cache rows of `model` (an
  artifact.Artifact); at most `max_queue` sequences wait for a row."""

  def __init__(self, model, slots, max_queue):
    self.model, self.max_queue = model, max_queue
    self.slots = decoding.Slots(model.decoder, slots)
    self.waiting, self.cond = collections.deque(), threading.Condition()
    self.active = {}  # row -> Sequence
    self.steps = self.tokens = self.finished = self.cancelled = 0  # so far; tokens / steps is the batching achieved
    threading.Thread(target=self._loop, name="generator", daemon=True).start()

  def counts(self):
    return {"queued": len(self.waiting), "active": len(self.active), "slots": self.slots.n, "steps": self.steps,
            "tokens": self.tokens, "finished": self.finished, "cancelled": self.cancelled}

  def cancel(self, sequences):
    """Their request has given up on them: those waiting leave the queue now (their places are free for
    the next request), those decoding leave their row at the next token, finished ones are left alone."""
    with self.cond:
      for seq in sequences:
        seq.cancelled = True
      waiting = collections.deque(seq for seq in self.waiting if not seq.cancelled)
      self.cancelled += len(self.waiting) - len(waiting)
      self.waiting = waiting

  def submit(self, sequences):
    """Queues a request's sequences, all or none (Busy)."""
    with self.cond:
      if len(self.waiting) + len(sequences) > self.max_queue:
        raise Busy(f"The server is busy ({len(self.waiting)} sequences wait for one of its {self.slots.n} rows, "
                   f"at most {self.max_queue} may); retry shortly.")
      self.waiting.extend(sequences)
      self.cond.notify()

  def _loop(self):
    while True:
      with self.cond:
        while not self.waiting and not self.active:
          self.cond.wait()
        free = [row for row in range(self.slots.n) if row not in self.active]
        joining = [(row, self.waiting.popleft()) for row in free[:len(self.waiting)]]
      try:
        self._join(joining)
        for row, seq in list(self.active.items()):
          if seq.cancelled:
            self._leave(row, seq)
        if self.active:
          rows = list(self.active)
          drawn = self.slots.step(rows)
          self.steps += 1
          for row, token in zip(rows, drawn):
            self._add(row, self.active[row], token)
      except Exception as e:  # a bug: the sequences in flight end with it (a 500); the worker goes on
        traceback.print_exc()
        for seq in {*(seq for _, seq in joining), *self.active.values()}:
          seq.events.put(e)
        self.active.clear()
        self.slots.reset()  # the failed call may have taken the cache with it (donated), and no row is in use

  def _join(self, joining):
    """Prefills the joining sequences (those not cancelled meanwhile) together, into their rows."""
    # Read once: a request's thread may cancel one meanwhile, which must then be both counted and left out.
    staying = [(row, seq) for row, seq in joining if not seq.cancelled]
    with self.cond:  # cancel() counts too, on a request's thread
      self.cancelled += len(joining) - len(staying)
    joining = staying
    started = self.slots.start_all([decoding.Start(row, seq.ids, **seq.sampling) for row, seq in joining])
    for (row, seq), (first, prompt) in zip(joining, started):
      seq.events.put(Prompt(seq.index, prompt))
      self.active[row] = seq
      if seq.max_tokens == 0:  # the prompt alone (its logprobs, with echo)
        seq.events.put(Event(seq.index, None, "", 0, "length"))
        self._leave(row, seq, cancelled=False)
      else:
        self._add(row, seq, first)

  def _add(self, row, seq, token):
    self.tokens += 1
    if seq.add(token, self.slots.full(row)):
      self._leave(row, seq, cancelled=False)

  def _leave(self, row, seq, cancelled=True):
    del self.active[row]
    with self.cond:
      self.cancelled, self.finished = self.cancelled + cancelled, self.finished + (not cancelled)
