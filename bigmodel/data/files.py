"""Your own data files, read into plain Python: text files for language models, labelled texts
(.csv / .jsonl) for classifiers; and the rule both use to hold out a validation tail.
"""
import csv
import dataclasses
import glob
import json
import os

import numpy as np

from bigmodel import errors


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
  """(head, tail): the tail is the last `val_fraction` of `text`, or a little less: it starts after the
  first blank line at or past the cut point (a speech boundary in a play), else after a line end,
  else at the cut itself."""
  if not 0 <= val_fraction < 1:
    raise errors.UserError(f"val_fraction must be in [0, 1), got {val_fraction}.")
  if val_fraction == 0:
    return text, ""
  cut = int(len(text) * (1 - val_fraction))
  for boundary in ("\n\n", "\n"):
    at = text.find(boundary, max(0, cut - len(boundary)))  # one ending right at the cut counts
    if at != -1:
      cut = at + len(boundary)
      break
  return text[:cut], text[cut:]


def split_all(texts, val_fraction):
  """{"train", "val"}: each text split by `split_text`, the heads and the tails concatenated."""
  parts = [split_text(t, val_fraction) for t in texts]
  return {"train": "".join(p[0] for p in parts), "val": "".join(p[1] for p in parts)}


def read_text_files(paths, val_fraction: float = 0.1) -> dict:
  """{"train": str, "val": str} from UTF-8 text files: a list of paths (in that order) or one glob
  pattern (sorted matches); each file split by `split_text` and the parts concatenated."""
  if isinstance(paths, str):
    pattern, paths = paths, sorted(glob.glob(paths, recursive=True))
    if not paths:
      raise errors.NotFound(f"No files match {pattern!r}. Give a glob such as 'texts/*.txt' or a list of paths.")
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise errors.NotFound(f"Text files not found: {', '.join(missing)}.")
  texts = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      texts.append(f.read())
  return split_all(texts, val_fraction)


@dataclasses.dataclass
class Labelled:
  texts: list  # N strings
  labels: np.ndarray  # int32 [N], index into classes
  classes: list  # class names


def label_ids(labels, classes, source) -> np.ndarray:
  index = {str(c): i for i, c in enumerate(classes)}
  unknown = sorted({str(l) for l in labels} - set(index))
  if unknown:
    raise errors.UserError(f"Labels {unknown[:10]} in {source} are not among the classes {list(classes)}. "
                           "Pass classes= listing every label (e.g. the training file's classes).")
  return np.array([index[str(l)] for l in labels], np.int32)


def read_labelled(path: str, text_key: str = "text", label_key: str = "label", classes=None) -> Labelled:
  """(text, label) examples from a .csv (with a header row) or .jsonl file (one object per line).

  Labels are matched as strings to `classes`; without `classes`, they are the sorted distinct labels
  (numerically if all are integers, so 0/1 stay 0/1). Pass the training file's `classes` when
  reading its test file, so both map labels alike."""
  if not os.path.exists(path):
    raise errors.NotFound(f"Labelled text file not found: {path}")
  with open(path, encoding="utf-8", newline="") as f:
    if path.endswith(".csv"):
      rows = list(csv.DictReader(f))
    elif path.endswith((".jsonl", ".json")):
      rows = [json.loads(line) for line in f if line.strip()]
    else:
      raise errors.UserError(f"Unknown labelled-file format {path!r}: use .csv (header row) or .jsonl.")
  missing = [k for k in (text_key, label_key) if rows and k not in rows[0]]
  if missing or not rows:
    raise errors.UserError(f"{path} has no {' or '.join(repr(k) for k in missing) or 'rows'}"
                           f"{'; its columns: ' + ', '.join(rows[0]) if rows else ''}. "
                           "Name the columns with text_key= and label_key=.")
  labels = [str(r[label_key]).strip() for r in rows]
  if classes is None:
    distinct = set(labels)
    numeric = all(l.lstrip("-").isdigit() for l in distinct)
    classes = sorted(distinct, key=int if numeric else None)
  return Labelled(texts=[r[text_key] for r in rows], labels=label_ids(labels, classes, path),
                  classes=[str(c) for c in classes])
