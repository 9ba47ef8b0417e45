"""Tokenize a corpus once, in parallel, into token shards that `data.name=tokens` trains on.

    python -m bigmodel.prepare --input='texts/*.txt' --tokenizer=byte --out=corpora/mine
    python -m bigmodel.prepare --input=owt.jsonl.gz --text_key=text --tokenizer=gpt2 --out=corpora/owt

Inputs (`--input`, comma-separated, each a path or a glob): `.txt` (each file a document, cut into
pieces of at most --piece_mb at line starts where tokenizers' pieces never span, each piece a document),
`.jsonl` / `.jsonl.gz` (a document a line, its --text_key), `.parquet` (column --text_key; needs
pyarrow), or a TFDS text dataset name (`lm1b`, `name:split`; needs a network on first use).
`--tokenizer`: byte | char | bpe (char and bpe are learnt from the first --sample_mb of the training
documents) | a directory with a saved tokenizer (a run's workdir, a Hugging Face checkpoint) | a hub id.

The input is streamed: memory holds the tasks in flight (2 per worker, --task_mb of text each), never a
whole file. Workers (--workers, default all cores) tokenize tasks; results are written in input order,
so shard boundaries (every --shard_tokens tokens) depend on the input and tokenizer only, not on worker
timing. Each document ends with the tokenizer's end-of-text id, or, for a tokenizer without one, the
--separator text's ids. Document k (0-based, in input order) is held out for validation when
k % --val_every == --val_every - 1.

Killed at any moment and run again with the same command, it keeps the finished shards (each is written
to a temporary name and renamed when whole), restarts the unfinished ones from where they began (the
manifest records it) and ends byte-identical to an uninterrupted run. An --out dir prepared from other
inputs or another tokenizer is refused, naming what differs. The manifest format and the reader are
bigmodel/data/tokens.py's.
"""
import collections
import glob
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
from absl import flags
from jax._src import xla_bridge  # backends_are_initialized: no public API says whether jax's threads started

from bigmodel import errors, tokenizers
from bigmodel.data import tokens

_tokenizer = None  # each worker's, loaded once (_init_worker)


def expand(inputs):
  """The sources: [(kind, path or TFDS name, size in bytes or records)], files sorted within each glob."""
  sources = []
  for item in inputs:
    paths = sorted(glob.glob(item)) if glob.has_magic(item) else ([item] if os.path.exists(item) else [])
    if paths:
      for path in paths:
        sources.append((_kind(path), os.path.abspath(path), os.path.getsize(path)))
    elif os.sep in item or "." in os.path.basename(item) and not item.split(":")[0].isidentifier():
      raise errors.NotFound(f"--input {item!r} matches no file.")
    else:
      sources.append(("tfds", item, 0))
  if not sources:
    raise errors.UserError("--input names no file: give paths, globs or a TFDS text dataset name.")
  return sources


def _kind(path):
  for ending, kind in ((".jsonl.gz", "jsonl"), (".jsonl", "jsonl"), (".json.gz", "jsonl"), (".parquet", "parquet")):
    if path.endswith(ending):
      return kind
  return "txt"


class Line(collections.namedtuple("Line", "data path n")):
  """A JSON line as read (bytes), and where it stands: the workers parse it (parsing in the one process that
  reads the input would bound the throughput to one core's)."""

  def __len__(self):
    return len(self.data)


def documents(sources, text_key, piece_bytes, parse=True):
  """Every document of the sources, in order, as str (a .jsonl line as a `Line` unless `parse`)."""
  for kind, path, _ in sources:
    if kind == "txt":
      yield from _pieces(path, piece_bytes)
    elif kind == "jsonl":
      opener = gzip.open if path.endswith(".gz") else open
      with opener(path, "rb") as f:
        for n, line in enumerate(f, 1):
          if line.strip():
            yield text_of(Line(line, path, n), text_key) if parse else Line(line, path, n)
    elif kind == "parquet":
      try:
        import pyarrow.parquet as pq
      except ModuleNotFoundError:
        raise errors.UserError(f"Reading {path} needs pyarrow: pip install pyarrow") from None
      for batch in pq.ParquetFile(path).iter_batches(columns=[text_key], batch_size=1024):
        yield from batch.column(0).to_pylist()
    else:
      import tensorflow_datasets as tfds
      name, _, split = path.partition(":")
      try:
        source = tfds.data_source(name, split=split or "train")
      except Exception as e:  # TFDS raises many kinds; all mean "could not get it"
        raise errors.UserError(f"--input {path!r} is no file, and TFDS could not open it as a dataset: {e}") from e
      for record in source:
        text = record[text_key]
        yield text.decode("utf-8") if isinstance(text, bytes) else text


def text_of(doc, text_key):
  """A document's text: `doc` itself, or the `text_key` field of a `Line`'s JSON record."""
  if not isinstance(doc, Line):
    return doc
  try:
    record = json.loads(doc.data)
  except ValueError as e:
    raise errors.UserError(f"{doc.path} line {doc.n} is not JSON ({e}): each line of a .jsonl holds one record.") \
        from None
  if not isinstance(record, dict) or text_key not in record:
    keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
    raise errors.UserError(f"{doc.path} line {doc.n} has no {text_key!r} (keys: {keys}): set --text_key.")
  return record[text_key]


def _pieces(path, piece_bytes):
  """A text file in pieces of at most ~piece_bytes, each cut before a line that starts with a
  non-space character: GPT-2's and SentencePiece's pieces never span such a cut."""
  with open(path, encoding="utf-8", newline="") as f:
    held = ""
    while True:
      block = f.read(piece_bytes)
      held += block
      while len(held) >= piece_bytes or (not block and held):
        cut = _cut(held, piece_bytes) if block else len(held)
        yield held[:cut]
        held = held[cut:]
      if not block:
        return


def _cut(text, limit):
  """The last place before `limit` where a line starting with a non-space character begins; else `limit`."""
  i = text.rfind("\n", 0, limit)
  while i > 0 and i + 1 < len(text) and text[i + 1].isspace():
    i = text.rfind("\n", 0, i)
  return i + 1 if i > 0 else limit


def make_tokenizer(name, sample_text, vocab_size):
  if os.path.isdir(name):
    return tokenizers.load(name)
  if name in tokenizers.TOKENIZERS:
    return tokenizers.build(name, sample_text, **({"vocab_size": vocab_size} if name == "bpe" else {}))
  from bigmodel import huggingface
  try:
    return tokenizers.load(huggingface.local_dir(name))
  except FileNotFoundError as e:
    raise errors.UserError(f"--tokenizer={name!r} is neither {', '.join(tokenizers.TOKENIZERS)}, a directory with a "
                           f"saved tokenizer, nor a Hugging Face checkpoint with one: {e}") from e


def _sample(sources, args):
  """The first --sample_mb of the training documents, which char and bpe are learnt from."""
  parts, size = [], 0
  for k, doc in enumerate(documents(sources, args["text_key"], args["piece_bytes"])):
    if (k + 1) % args["val_every"]:
      parts.append(doc)
      size += len(doc)
      if size >= args["sample_mb"] * 2**20:
        break
  return "\n".join(parts)


def _init_worker(directory):
  global _tokenizer
  os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread a worker: the workers are the parallelism
  _tokenizer = tokenizers.load(directory)


def _encode(task, dtype, separator_ids, text_key):
  """A task's documents -> [(doc index, bytes of its ids, its text's UTF-8 bytes)]."""
  out = []
  encode_batch = getattr(getattr(_tokenizer, "tokenizer", None), "encode_batch", None)
  texts = [text_of(doc, text_key) for _, doc in task]
  task = list(zip((k for k, _ in task), texts))
  if encode_batch is not None:  # a Hugging Face tokenizer: one call for the task
    ids = [e.ids for e in encode_batch(texts, add_special_tokens=False)]
  else:
    ids = [_tokenizer.encode(t) for t in texts]
  for (k, text), doc_ids in zip(task, ids):
    doc = np.concatenate([np.asarray(doc_ids, np.int64), separator_ids]).astype(dtype)
    out.append((k, doc.tobytes(), len(text.encode("utf-8"))))
  return out


class Writer:
  """One split's shards: tokens appended in order, a shard renamed into place when it is whole."""

  def __init__(self, out, split, dtype, shard_tokens, manifest):
    self.out, self.split, self.itemsize, self.shard_tokens = out, split, np.dtype(dtype).itemsize, shard_tokens
    self.manifest = manifest
    self.done = manifest["shards"][split]
    self.start = manifest["resume"][split]  # [doc, token] where the unfinished shard begins
    self.resumed_at = list(self.start)  # where this run takes up the split
    self.file, self.filled = None, 0

  def skip(self, k):
    """How many of document k's tokens were written into finished shards already (None: all)."""
    doc, token = self.resumed_at
    return None if k < doc else (token if k == doc else 0)

  def add(self, k, data, on_shard):
    """Appends document k's ids (bytes) from token `skip(k)` on; `on_shard()` after each finished shard."""
    skip = self.skip(k)
    if skip is None:
      return
    pos = skip
    n = len(data) // self.itemsize
    while pos < n:
      if self.file is None:
        self.start = [k, pos]
        self.file = open(self._path() + ".tmp", "wb")
        self.filled = 0
      take = min(n - pos, self.shard_tokens - self.filled)
      self.file.write(data[pos * self.itemsize:(pos + take) * self.itemsize])
      pos += take
      self.filled += take
      if self.filled == self.shard_tokens:
        self.finish(next_start=[k, pos] if pos < n else [k + 1, 0])
        on_shard()

  def finish(self, next_start):
    if self.file is None:
      return
    self.file.close()
    self.file = None
    os.replace(self._path() + ".tmp", self._path())
    self.done.append({"file": os.path.basename(self._path()), "tokens": self.filled,
                      "fingerprint": tokens.fingerprint(self._path())})
    self.start = next_start
    self.manifest["resume"][self.split] = next_start

  def _path(self):
    return os.path.join(self.out, tokens.shard_name(self.split, len(self.done)))


def write_json(path, record):
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, path)


def _identity(sources, args, tok_name, tok_hash):
  return {"sources": [{"kind": k, "path": p, "bytes": s} for k, p, s in sources],
          "tokenizer": {"name": tok_name, "sha256": tok_hash},
          **{k: args[k] for k in ("text_key", "shard_tokens", "val_every", "separator", "piece_bytes")}}


def _differences(old, new):
  """What differs between two identities, in words."""
  out = []
  if old["sources"] != new["sources"]:
    was = {s["path"]: s["bytes"] for s in old["sources"]}
    now = {s["path"]: s["bytes"] for s in new["sources"]}
    for p in sorted(set(was) | set(now)):
      if p not in now:
        out.append(f"input {p} was prepared but is not given now")
      elif p not in was:
        out.append(f"input {p} is new")
      elif was[p] != now[p]:
        out.append(f"input {p} had {was[p]:,} bytes, now {now[p]:,}")
    if not out:
      out.append("the inputs are in another order")
  if old["tokenizer"]["sha256"] != new["tokenizer"]["sha256"]:
    out.append(f"the tokenizer was {old['tokenizer']['name']!r}, now {new['tokenizer']['name']!r} (another sha256)")
  out += [f"--{k}={old[k]!r}, now {new[k]!r}" for k in ("text_key", "shard_tokens", "val_every", "separator",
                                                       "piece_bytes") if old[k] != new[k]]
  return out


def prepare(inputs, tokenizer, out, text_key="text", workers=0, shard_tokens=100_000_000, val_every=10,
            separator="\n\n", vocab_size=1024, sample_mb=10.0, piece_mb=4.0, task_mb=1.0, progress=True):
  """Writes `out` (see the module docstring); returns its manifest."""
  if val_every < 2 or shard_tokens < 1:
    raise errors.UserError("--val_every must be at least 2 and --shard_tokens at least 1.")
  args = dict(text_key=text_key, shard_tokens=shard_tokens, val_every=val_every, separator=separator,
              piece_bytes=int(piece_mb * 2**20), sample_mb=sample_mb)
  sources = expand(inputs)
  os.makedirs(out, exist_ok=True)
  manifest_path = os.path.join(out, tokens.MANIFEST)
  old = tokens.read_manifest(out) if os.path.exists(manifest_path) else None
  tok_dir = tempfile.mkdtemp(dir=out, prefix=".tokenizer")
  try:
    sample = _sample(sources, args) + separator if tokenizer in ("char", "bpe") else ""  # separator: encodable
    tok = make_tokenizer(tokenizer, sample, vocab_size)
    tok.save(tok_dir)
    identity = _identity(sources, args, tokenizer, tokens.tokenizer_hash(tok_dir))
    if old is not None:
      differs = _differences(old, identity)
      if differs:
        raise errors.UserError(f"{out} holds a corpus prepared differently: {'; '.join(differs)}. Use another --out, "
                               "or delete it to prepare it anew.")
      if old.get("complete"):
        print(f"{out} is already prepared: {sum(s['tokens'] for s in old['shards']['train']):,} training tokens.",
              file=sys.stderr)
        return old
    tok.save(out)
  finally:
    for name in os.listdir(tok_dir):
      os.remove(os.path.join(tok_dir, name))
    os.rmdir(tok_dir)
  for name in os.listdir(out):  # an unfinished shard of a killed run starts again
    if name.endswith(".tmp"):
      os.remove(os.path.join(out, name))
  dtype = tokens.dtype_for(tok.vocab_size)
  separator_ids = np.asarray([tok.eos_id] if tok.eos_id is not None else tok.encode(separator), np.int64)
  manifest = old or {"format": tokens.FORMAT, "complete": False, **identity, "dtype": dtype,
                     "vocab_size": tok.vocab_size, "end_of_document": separator_ids.tolist(),
                     "shards": {s: [] for s in tokens.SPLITS}, "resume": {s: [0, 0] for s in tokens.SPLITS},
                     "documents": {s: 0 for s in tokens.SPLITS}, "text_bytes": {s: 0 for s in tokens.SPLITS},
                     "val_documents": f"document k is validation when k % {val_every} == {val_every - 1}"}
  writers = {s: Writer(out, s, dtype, shard_tokens, manifest) for s in tokens.SPLITS}
  first = min(w.start[0] for w in writers.values())  # documents before it are in finished shards of both splits
  # Counts are rebuilt from the start of the unfinished shards: documents before them are counted again.
  counted = manifest.pop("counted", {s: [0, 0, 0] for s in tokens.SPLITS})  # split -> [upto doc, docs, text bytes]
  save = lambda: write_json(manifest_path, {**manifest, "counted": counted})
  save()  # from now on a rerun with other inputs or another tokenizer is refused
  total = sum(s for kind, _, s in sources if kind != "tfds") or None
  # Forked workers start at once (spawned ones would import jax again, ~1 s and 150 MB each); forked before
  # tqdm starts its monitor thread, from a process that has run no tokenizer's thread pool, and only while
  # jax has started no backend (its threads; `prepare` called from a process that trained spawns instead).
  forkable = "fork" in multiprocessing.get_all_start_methods() and not xla_bridge.backends_are_initialized()
  method = "fork" if forkable else "spawn"
  with multiprocessing.get_context(method).Pool(workers or os.cpu_count(), initializer=_init_worker,
                                                initargs=(out,)) as pool:
    from tqdm import tqdm
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="prepare", disable=not progress,
               dynamic_ncols=True)
    written, t0 = 0, time.perf_counter()
    pending = collections.deque()

    def drain(block):
      nonlocal written
      while pending and (block or pending[0].ready()):
        for k, data, nbytes in pending.popleft().get():
          split = "val" if k % val_every == val_every - 1 else "train"
          upto, docs, size = counted[split]
          if k >= upto:
            counted[split] = [k + 1, docs + 1, size + nbytes]
          writers[split].add(k, data, save)
          written += len(data) // np.dtype(dtype).itemsize
          bar.update(nbytes)
        bar.set_postfix_str(f"{written / (time.perf_counter() - t0):,.0f} tokens/s", refresh=False)

    task, size = [], 0
    for k, doc in enumerate(documents(sources, text_key, args["piece_bytes"], parse=False)):
      if k < first:
        bar.update(len(doc) if isinstance(doc, Line) else len(doc.encode("utf-8")))
        continue
      task.append((k, doc))
      size += len(doc)
      if size >= task_mb * 2**20:
        pending.append(pool.apply_async(_encode, (task, dtype, separator_ids, text_key)))
        task, size = [], 0
        drain(block=len(pending) > 2 * (workers or os.cpu_count()))
    if task:
      pending.append(pool.apply_async(_encode, (task, dtype, separator_ids, text_key)))
    drain(block=True)
  bar.close()
  for split, w in writers.items():
    w.finish(next_start=[0, 0])
    if not w.done:
      raise errors.UserError(f"The corpus has no {split} documents (document k is validation when k % "
                             f"{val_every} == {val_every - 1}): give more documents or a smaller --val_every.")
    manifest["documents"][split], manifest["text_bytes"][split] = counted[split][1], counted[split][2]
  manifest["complete"] = True
  del manifest["resume"]
  write_json(manifest_path, manifest)
  seconds = time.perf_counter() - t0
  n = {s: sum(x["tokens"] for x in manifest["shards"][s]) for s in tokens.SPLITS}
  print(f"{out}: {n['train']:,} training and {n['val']:,} validation tokens ({dtype}) in "
        f"{sum(len(v) for v in manifest['shards'].values())} shard(s), {seconds:.1f} s", file=sys.stderr)
  return manifest


def _define_flags():
  flags.DEFINE_list("input", None, "Files, globs (.txt, .jsonl, .jsonl.gz, .parquet) or a TFDS text dataset "
                    "name (name or name:split), comma-separated.")
  flags.DEFINE_string("tokenizer", "byte", "byte | char | bpe | a directory with a saved tokenizer | a "
                      "Hugging Face hub id.")
  flags.DEFINE_string("out", None, "Directory for the shards, the tokenizer and manifest.json.")
  flags.DEFINE_string("text_key", "text", ".jsonl / .parquet / TFDS: the field holding the text.")
  flags.DEFINE_integer("workers", 0, "Tokenizing processes; 0 = one per core.")
  flags.DEFINE_integer("shard_tokens", 100_000_000, "Tokens per shard (the last of a split is shorter).")
  flags.DEFINE_integer("val_every", 10, "Every N-th document is validation (N=10: 10 %).")
  flags.DEFINE_string("separator", "\n\n", "Text ending each document, for a tokenizer without an "
                      "end-of-text token (byte, char, bpe).")
  flags.DEFINE_integer("vocab_size", 1024, "bpe: vocabulary size.")
  flags.DEFINE_float("sample_mb", 10.0, "char, bpe: MB of training text they are learnt from.")
  flags.DEFINE_float("piece_mb", 4.0, ".txt: longest piece of a file taken as one document.")
  flags.DEFINE_float("task_mb", 1.0, "Text per task sent to a worker.")


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.input or not f.out:
    raise errors.UserError("--input and --out are required.")
  prepare(f.input, f.tokenizer, f.out, f.text_key, f.workers, f.shard_tokens, f.val_every, f.separator,
          f.vocab_size, f.sample_mb, f.piece_mb, f.task_mb)


if __name__ == "__main__":
  _define_flags()
  errors.run(main)
