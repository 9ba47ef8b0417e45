"""The food reviews (fine_foods) as chat data: one {"prompt", "completion"} a line, for data.name=chat.

  python -m experiments.instruction_tuning.data --out=runs/fine_foods_chat [--max_words=40] [--test_reviews=100]

Each review becomes "Review: <text>\n\nIs this review great or other?" and its answer, "great" or "other"
(modeldata's labels: "great" is a 5-star rating). Only reviews of at most --max_words words are kept (the
model reads whole reviews, and short ones keep a CPU run short); the test file holds the first
--test_reviews of the short test reviews (the split is a random sample already). Written as files, not
rendered in memory by a data.name of its own, so the run reads what any user's chat data goes through.
"""
import json
import os
import re
import string

from absl import app, flags

from bigmodel.data import fine_foods

LABELS = ("great", "other")


def question(review):
  return f"Review: {review}\n\nIs this review great or other?"


def clean(review):
  """The review as a person reads it: its HTML line breaks as spaces, runs of spaces as one."""
  return re.sub(r"\s+", " ", re.sub(r"<br\s*/?>", " ", review)).strip()


def records(split, max_words, limit=None):
  """[{"prompt", "completion"}, ...] of `split`'s reviews of at most `max_words` words, in the split's order."""
  raw = fine_foods.load()[split]
  out = []
  for text, label in zip(raw.texts, raw.labels):
    text = clean(text)
    if len(text.split()) <= max_words:
      out.append({"prompt": question(text), "completion": raw.classes[label]})
  return out[:limit]


def answer(text):
  """The label a generated answer gives: "great" or "other" as the whole answer (any case, surrounding spaces
  and final punctuation aside), else None: an answer that is neither word counts as wrong."""
  word = text.strip().strip(string.punctuation + " ").lower()
  return word if word in LABELS else None


def write(out, max_words=40, test_reviews=100):
  """Writes out/train.jsonl and out/test.jsonl; returns their paths."""
  os.makedirs(out, exist_ok=True)
  paths = []
  for split, limit in (("train", None), ("test", test_reviews)):
    path = os.path.join(out, f"{split}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in records(split, max_words, limit))
    paths.append(path)
  return tuple(paths)


def main(argv):
  del argv
  f = flags.FLAGS
  for path in write(f.out, f.max_words, f.test_reviews):
    with open(path, encoding="utf-8") as file:
      print(f"{path}: {sum(1 for _ in file)} conversations")


if __name__ == "__main__":
  flags.DEFINE_string("out", "runs/fine_foods_chat", "Where train.jsonl and test.jsonl go.")
  flags.DEFINE_integer("max_words", 40, "Keep reviews of at most this many words.")
  flags.DEFINE_integer("test_reviews", 100, "Test conversations: the first this many short test reviews.")
  app.run(main)
