"""Stop strings (OpenAI's `stop`): where a sequence's text ends, and how much of its end is held back
from a stream while it could still become one.

A request has at most MAX_STOPS of them (OpenAI's cap), each at most MAX_STOP_CHARS characters. Each
sequence watches its text with one Knuth-Morris-Pratt matcher per stop string, fed each character once
as the text grows: the matcher's state is the longest end of the text that is the start of its stop
string, which is both whether the stop string has come and how much to hold back. The work is linear in
the text and the stop strings (the tables are made once per request, on its own thread), so a request's
stop strings cost the generator thread, which every client shares, a few steps per new character.

The text is the decode of the whole sequence, and only grows, except that a byte-level tokenizer decodes
an incomplete last character as U+FFFD: those characters are held back, and watched once they are whole
(or the sequence ends).
"""
import json

from bigmodel.serving.http import HTTPError

MAX_STOPS = 4  # as OpenAI's API
MAX_STOP_CHARS = 1000  # a stop string's length: a longer one is refused (400)


def parse(value, param="stop"):
  """OpenAI's `stop` (a string, a list of up to MAX_STOPS, or null) as Stops; HTTPError 400 otherwise."""
  strings = [] if value is None else [value] if isinstance(value, str) else value
  if not isinstance(strings, list) or len(strings) > MAX_STOPS or not all(isinstance(s, str) and s for s in strings):
    raise HTTPError(400, f"{param} must be a non-empty string or a list of up to {MAX_STOPS} of them, got "
                         f"{json.dumps(value)[:100]}.", param)
  if any(len(s) > MAX_STOP_CHARS for s in strings):
    longest = max(len(s) for s in strings)
    raise HTTPError(400, f"A stop string may be at most {MAX_STOP_CHARS:,} characters; one is {longest:,}.", param)
  return Stops(strings)


class Stops:
  """A request's stop strings, each with its matcher's fallback table, shared by the request's sequences."""

  def __init__(self, strings=()):
    self.strings = tuple(strings)
    self.tables = [_fallbacks(s) for s in self.strings]

  def __bool__(self):
    return bool(self.strings)


def _fallbacks(s):
  """table[k], for the k first characters of `s` matched: how many of them still are, when the next
  character is not s[k] (the longest proper prefix of s[:k] that ends it)."""
  table, k = [0] * (len(s) + 1), 0
  for i in range(1, len(s)):
    while k and s[i] != s[k]:
      k = table[k]
    k += s[i] == s[k]
    table[i + 1] = k
  return table


class Watch:
  """One sequence's text against its request's Stops, fed as the text grows (`update`)."""

  def __init__(self, stops):
    self.stops = stops
    self.matched = [0] * len(stops.strings)  # per stop string: how many of its first characters end the text
    self.fed = 0  # characters of the text fed to the matchers

  def update(self, text, final=False):
    """(`text` cut before the first stop string in it, or None if there is none; how many characters at
    the end of `text` may still change: the start of a stop string, or an incomplete last character).
    `final`: the sequence ends here whatever comes, so an incomplete last character is watched too."""
    whole = len(text) if final else len(text.rstrip("\ufffd"))
    cut = None
    for i in range(self.fed, whole):
      c = text[i]
      for j, (s, table) in enumerate(zip(self.stops.strings, self.stops.tables)):
        k = self.matched[j]
        while k and s[k] != c:
          k = table[k]
        k += s[k] == c
        if k == len(s):  # s ends at i; go on: a stop string that starts earlier may end later in this text
          cut = i + 1 - k if cut is None else min(cut, i + 1 - k)
          k = table[k]
        self.matched[j] = k
    self.fed = max(self.fed, whole)
    if cut is not None:
      return text[:cut], 0
    return None, max(self.matched, default=0) + len(text) - whole
