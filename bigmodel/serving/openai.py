"""OpenAI's reply shapes, made from the worker's events for a request's sequences (batching.Event and
batching.Prompt, as the app's `events` yields them): a completion whole (`Completion.whole`) or as
server-sent events' chunks (`Completion.chunk`, through `stream`, which ends any OpenAI stream). A chat
completion would be one more class here beside Completion, with its own chunk."""
import json
import time
import traceback
import uuid

from bigmodel import decoding
from bigmodel.serving import batching
from bigmodel.serving.http import ClientGone, HTTPError, internal_error


def stream(chunks):
  """Server-sent events' data: each chunk (None: skipped) as JSON, then [DONE]. A failure once the reply
  has begun (its status sent) is the last event before [DONE], in OpenAI's error shape: the openai client
  raises it (an APIError), and a client that reads to [DONE], as vLLM's streams end too, is not left
  waiting."""
  try:
    for chunk in chunks:
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


class Completion:
  """One /v1/completions reply (requests.Completion `request`, whose sequences are `seqs`), in OpenAI's
  shape; `decode`: ids -> text."""

  def __init__(self, name, decode, request, seqs):
    self.decode, self.seqs, self.echo, self.logprobs = decode, seqs, request.echo, request.logprobs
    self.prompt_texts = [text for text, _ in request.prompt]
    self.head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                 "model": name}

  def _prompt_text(self, index):
    return self.prompt_texts[index // (len(self.seqs) // len(self.prompt_texts))]

  def _logprobs(self, tokens, offsets):
    """OpenAI's logprobs object for (Token or None) tokens at these text offsets."""
    if self.logprobs is None:
      return None
    decode = lambda t: self.decode([int(t)])
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
    offsets = [len(self.decode(seq.ids[:j])) for j in range(len(seq.ids))]
    return self._prompt_text(prompt.index), tokens, offsets

  def chunk(self, event):
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

  def whole(self, events):
    """The whole reply, once `events` have all come."""
    choices = {}
    for event in events:
      chunk = self.chunk(event)
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
