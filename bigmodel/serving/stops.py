"""Stop strings (OpenAI's `stop`): where a sequence's text ends, and how much of its end is held back
from a stream while it could still become one. A request has at most MAX_STOPS of them (OpenAI's cap).
"""
import json

from bigmodel.serving.http import HTTPError

MAX_STOPS = 4  # as OpenAI's API


def parse(value, param="stop"):
  """OpenAI's `stop` (a string, a list of up to MAX_STOPS, or null) as Stops; HTTPError 400 otherwise."""
  strings = [] if value is None else [value] if isinstance(value, str) else value
  if not isinstance(strings, list) or len(strings) > MAX_STOPS or not all(isinstance(s, str) and s for s in strings):
    raise HTTPError(400, f"{param} must be a non-empty string or a list of up to {MAX_STOPS} of them, got "
                         f"{json.dumps(value)[:100]}.", param)
  return Stops(strings)


class Stops:
  """A request's stop strings, shared by the request's sequences."""

  def __init__(self, strings=()):
    self.strings = tuple(strings)

  def __bool__(self):
    return bool(self.strings)


class Watch:
  """One sequence's text against its request's Stops, as the text grows (`update`)."""

  def __init__(self, stops):
    self.stops = stops

  def update(self, text, final=False):
    """(`text` cut before the first stop string in it, or None if there is none; how many characters at
    the end of `text` may still change: the start of a stop string, or an incomplete character (a
    byte-level tokenizer decodes a cut UTF-8 sequence as U+FFFD))."""
    del final
    strings = self.stops.strings
    cut = min((i for i in (text.find(s) for s in strings) if i >= 0), default=-1)
    if cut >= 0:
      return text[:cut], 0
    n = max((k for s in strings for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    return None, max(n, len(text) - len(text.rstrip("\ufffd")))
