"""POST /v1/chat/completions, OpenAI's chat completions API: its request (`ChatCompletion`), the endpoint
(`completions`, which app.py routes), and its reply's shapes (`Reply`: whole, or as stream chunks).

The conversation is rendered with the model's chat template (bigmodel/chat.py, exported with the tokenizer)
and ends with the assistant's header; its sequences decode in the same continuous batch as /v1/completions
(batching.Generator), and stop at the template's end-of-turn token (model.json's end_of_turn_id: <|im_end|>,
<|eot_id|>, ...) or the model's end-of-text token where it differs (Llama 3's <|end_of_text|>), whose text is left out, or at a stop string (finish_reason "stop"), or at max_tokens or the
end of the context ("length"). A stream is OpenAI's: for each choice a first chunk with the role, then its
content deltas, then a chunk with its finish_reason and an empty delta; `stream_options.include_usage` adds
a last chunk with the usage and no choices; then `data: [DONE]`.
"""
import dataclasses
import itertools
import json
import queue
import random
import time
import uuid

from bigmodel import chat, errors
from bigmodel.serving import batching, openai, requests, stops
from bigmodel.serving.http import HTTPError
from bigmodel.serving.requests import REQUIRED, Limit, Number, field, flag, neutral


def messages(value, name, limits):
  """A conversation that a template can render: a non-empty list of {"role", "content": str}."""
  try:
    chat.check(value)
  except errors.UserError as e:
    raise HTTPError(400, str(e), name) from None
  for i, m in enumerate(value):
    unknown = sorted(set(m) - {"role", "content", "name"})
    if unknown:
      raise HTTPError(400, f"messages[{i}] has field(s) {', '.join(unknown)[:100]}, which this server does not take "
                           "(tool calls, images): send role and content.", name)
  return tuple({"role": m["role"], "content": m["content"]} for m in value)


def stream_options(value, name, limits):
  if not isinstance(value, dict) or set(value) - {"include_usage"} or not isinstance(
      value.get("include_usage", False), bool):
    raise HTTPError(400, f"{name} must be {{\"include_usage\": true or false}}, got {json.dumps(value)[:100]}.", name)
  return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatCompletion:
  """POST /v1/chat/completions: OpenAI's chat completions API."""
  model: str = field(REQUIRED, requests.model_name, "the model's name (GET /v1/models)")
  messages: tuple = field(REQUIRED, messages, "the conversation: [{\"role\": system | user | assistant | tool, "
                                              "\"content\": a string}, ...]")
  max_tokens: int = field(None, Number(int, 0, Limit("max_new_tokens")), "tokens to draw (older name)")
  max_completion_tokens: int = field(None, Number(int, 0, Limit("max_new_tokens")),
                                     "tokens to draw; default the server's --max_new_tokens")
  temperature: float = field(1.0, Number(float, 0.0, 2.0), "0: greedy")
  top_p: float = field(1.0, Number(float, 1e-9, 1.0), "nucleus sampling")
  n: int = field(1, Number(int, 1, 16), "replies")
  stop: stops.Stops = field(stops.Stops(), requests.stop, f"a string or up to {stops.MAX_STOPS}")
  seed: int = field(None, requests.SEED_RANGE, "default: random")
  stream: bool = field(False, flag, "server-sent events: the role, content deltas, the finish, then [DONE]")
  stream_options: dict = field(None, stream_options, "{\"include_usage\": true}: a last chunk with the usage")
  user: str = field(None, requests.string, "ignored")
  frequency_penalty: float = field(0, neutral(0), "not supported: 0 only")
  presence_penalty: float = field(0, neutral(0), "not supported: 0 only")
  logit_bias: dict = field(None, neutral({}), "not supported: {} only")
  logprobs: bool = field(False, neutral(False), "not supported: false only")

  def check(self, limits):
    if self.max_tokens is not None and self.max_completion_tokens is not None and \
        self.max_tokens != self.max_completion_tokens:
      raise HTTPError(400, "max_tokens and max_completion_tokens differ: send one of them.", "max_tokens")
    if self.n > limits.max_queue:
      raise HTTPError(400, f"n={self.n} is more sequences than the queue holds ({limits.max_queue}).", "n")

  def tokens(self, limits):
    """The most tokens to draw."""
    sent = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
    return limits.max_new_tokens if sent is None else sent


def completions(app, body, client_gone):
  """OpenAI's POST /v1/chat/completions over `app` (serving.app.App): a reply, or (stream) its server-sent events."""
  app._needs("generate")
  r = requests.parse(ChatCompletion, body, app.limits)
  template = app.model.chat
  if template is None:
    raise HTTPError(400, f"The model {app.name!r} has no chat template (its tokenizer_config.json names none): "
                         "use POST /v1/completions with a prompt.", "messages")
  try:
    ids = [int(t) for t in template.encode(list(r.messages))]
  except errors.UserError as e:  # the template's raise_exception: e.g. roles that do not alternate
    raise HTTPError(400, str(e), "messages") from None
  ids = requests.prompt_ids(ids, "messages", app.limits)
  seed = random.randrange(requests.SEED_RANGE.high) if r.seed is None else r.seed
  events = queue.SimpleQueue()
  seqs = [batching.Sequence(j, ids, events, max_tokens=r.tokens(app.limits), temperature=r.temperature,
                            top_p=r.top_p, seed=seed + j, stop=r.stop, stop_ids=app.model.chat_stop_ids,
                            decode=app.model.decode)
          for j in range(r.n)]  # choice j: seed + j, as a completion's
  app._wait(lambda: app.worker.submit(seqs))
  reply = Reply(app.name, r, seqs)
  events = app.events(events, seqs, client_gone)
  if not r.stream:
    return reply.whole(events)
  return openai.stream(itertools.chain(itertools.chain.from_iterable(map(reply.chunks, events)), reply.last()))


class Reply:
  """One /v1/chat/completions reply (ChatCompletion `request`, whose sequences are `seqs`) in OpenAI's shape."""

  def __init__(self, name, request, seqs):
    self.seqs, self.request = seqs, request
    self.head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name,
                 "system_fingerprint": None}

  def _chunk(self, index, delta, finish_reason=None):
    return {**self.head, "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

  def chunks(self, event):
    """The stream's chunks for a Prompt (the role: the choice has begun) or an Event (its text, its finish)."""
    if isinstance(event, batching.Prompt):
      return [self._chunk(event.index, {"role": "assistant", "content": ""})]
    out = [self._chunk(event.index, {"content": event.text})] if event.text else []
    if event.finish_reason:
      out.append(self._chunk(event.index, {}, event.finish_reason))
    return out

  def usage(self):
    prompt, completion = len(self.seqs[0].ids), sum(len(s.tokens) for s in self.seqs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

  def last(self):
    """With stream_options.include_usage: the chunk with the usage and no choices (generated once all have come)."""
    if (self.request.stream_options or {}).get("include_usage"):
      yield {**self.head, "object": "chat.completion.chunk", "choices": [], "usage": self.usage()}

  def whole(self, events):
    """The whole reply, once `events` have all come."""
    finish = {}
    for event in events:
      if isinstance(event, batching.Event) and event.finish_reason:
        finish[event.index] = event.finish_reason
    return {**self.head, "object": "chat.completion",
            "choices": [{"index": s.index, "message": {"role": "assistant", "content": s.text}, "logprobs": None,
                         "finish_reason": finish.get(s.index)} for s in self.seqs],
            "usage": self.usage()}
