"""Token shards: a corpus tokenized once by `python -m bigmodel.prepare`, trained on through memory maps.

`data.name="tokens"`, `data.path=<dir>` (or a list of dirs, mixed by `data.weights`). This module holds the
contract between the writer (bigmodel/prepare.py) and the reader:

    <dir>/manifest.json        what was prepared: sources, tokenizer hash, dtype, separator, shards
    <dir>/tokenizer.json ...   the tokenizer (tokenizers.load(<dir>)), so a run saves the same one
    <dir>/train-00000.bin ...  raw little-endian token ids (uint16 if the vocabulary fits, else uint32);
    <dir>/val-00000.bin ...    documents end with the tokenizer's end-of-text id or the stated separator

Why memory maps and not ArrayRecord: a window of seq_len + 1 tokens may start at any token, and a map
reads exactly those bytes from one flat file by offset (numpy only, as nanoGPT does), where ArrayRecord
stores records and would need a window per record (fixed offsets) or several records per window.
A map is made for each batch and dropped after it (as nanoGPT does): a map kept open keeps every page
it ever touched counted in the process's memory, which grows with the corpus.

Training draws windows in an order derived from (seed, batch index) alone: each epoch over a
source's n windows is a keyed Feistel bijection of [0, n) (cycle-walking), so nothing of size n is
ever held and a checkpoint stores only how many batches were drawn. A mixture gives each source a
fixed number of rows of every batch (its weight times the batch size, rounded cumulatively).
"""
import dataclasses
import hashlib
import tempfile
import json
import os
import sys

import numpy as np

from bigmodel import errors, tokenizers
from bigmodel.registry import Key, at_least
from bigmodel.data.dataset import Dataset, register

MANIFEST = "manifest.json"
FORMAT = 1  # the manifest's "format": bumped when a reader could misread an older layout
SPLITS = ("train", "val")
KEYS = dict(  # data.<key>, for data.name=tokens: see data/__init__.py
    path=Key("", "tokens: a directory made by `python -m bigmodel.prepare`, or a list of them (a mixture)"),
    weights=Key((), "tokens: with several paths, each one's share of every batch; () = equal shares", at_least(0)),
)
FINGERPRINT_BYTES = 4096  # a shard's fingerprint: sha256 of its size and first and last page (what a check at
#                          start reads stays small: 600 shards, 5 MB)


def shard_name(split, i):
  return f"{split}-{i:05d}.bin"


def dtype_for(vocab_size):
  return "uint16" if vocab_size <= 1 << 16 else "uint32"


def fingerprint(path):
  """Cheap identity of a shard (size, head, tail): catches truncated files and another corpus's shards."""
  size = os.path.getsize(path)
  h = hashlib.sha256(str(size).encode())
  with open(path, "rb") as f:
    h.update(f.read(FINGERPRINT_BYTES))
    f.seek(max(size - FINGERPRINT_BYTES, 0))
    h.update(f.read(FINGERPRINT_BYTES))
  return h.hexdigest()


def tokenizer_hash(directory):
  """sha256 of the files that define a saved tokenizer (tokenizer.json and a SentencePiece model)."""
  h = hashlib.sha256()
  for name in (tokenizers.FILE, tokenizers.BPE_MODEL):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      with open(path, "rb") as f:
        h.update(name.encode() + b"\0" + f.read())
  return h.hexdigest()


def read_manifest(directory):
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    raise errors.NotFound(f"{directory} holds no prepared corpus ({MANIFEST} missing). Make one with: "
                          f"python -m bigmodel.prepare --input=<files> --tokenizer=<name> --out={directory}")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


class Shards:
  """The token ids of one split's shards as one 1-D array that can be indexed by an integer array.

  Each read maps the shards it touches and lets go of them afterwards (see the module docstring)."""

  def __init__(self, paths, counts, dtype):
    self.paths, self.dtype = list(paths), np.dtype(dtype)
    self.ends = np.cumsum(np.asarray(counts, np.int64))
    self.starts = self.ends - np.asarray(counts, np.int64)

  def __len__(self):
    return int(self.ends[-1]) if len(self.ends) else 0

  def __getitem__(self, idx):
    idx = np.asarray(idx, np.int64)
    flat = idx.ravel()
    out = np.empty(flat.shape, np.int32)
    shard = np.searchsorted(self.ends, flat, side="right")
    for s in np.unique(shard):
      here = shard == s
      mapped = np.memmap(self.paths[s], self.dtype, mode="r")
      out[here] = mapped[flat[here] - self.starts[s]]
      del mapped
    return out.reshape(idx.shape)


def _feistel(x, bits, keys):
  """A keyed bijection of [0, 2**bits) (bits even): 4 rounds of a Feistel network, uint64 arithmetic."""
  half = bits // 2
  mask = np.uint64((1 << half) - 1)
  left, right = x >> np.uint64(half), x & mask
  for key in keys:
    z = (right + key) * np.uint64(0x9E3779B97F4A7C15)  # splitmix64's mixer as the round function
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    left, right = right, left ^ ((z ^ (z >> np.uint64(31))) & mask)
  return (left << np.uint64(half)) | right


def permuted(i, n, seed, epoch):
  """Element `i` (an int64 array, each in [0, n)) of epoch `epoch`'s permutation of range(n): a Feistel
  bijection of the next power of 4 at or above n, walked until it lands inside [0, n)."""
  bits = max(2, (int(n) - 1).bit_length())
  bits += bits % 2
  keys = [np.uint64(k) for k in np.random.SeedSequence([seed, epoch]).generate_state(4, np.uint64)]
  x = np.asarray(i, np.uint64)
  with np.errstate(over="ignore"):
    x = _feistel(x, bits, keys)
    outside = x >= n
    while outside.any():  # at most 4n / n tries on average; each step stays on the element's own cycle
      x[outside] = _feistel(x[outside], bits, keys)
      outside = x >= n
  return x.astype(np.int64)


def rows_per_source(weights, batch_size):
  """Each source's rows of every batch: weight x batch_size, rounded so that they add up."""
  edges = np.round(np.cumsum(weights) / np.sum(weights) * batch_size).astype(np.int64)
  return np.diff(np.concatenate([[0], edges]))


class WindowOrder:
  """Batch b of an endless stream of epochs over each source's windows, from (seed, b) alone.

  Source s contributes rows_s rows to every batch: its draws b * rows_s ... (b + 1) * rows_s - 1 of
  its own stream of epochs, each epoch a fresh `permuted` order. Indices are global (source s's
  windows follow those of sources 0..s-1)."""

  def __init__(self, sizes, weights, batch_size, seed):
    self.sizes, self.seed = [int(n) for n in sizes], seed
    self.rows = rows_per_source(weights, batch_size)
    self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

  def __len__(self):
    return sys.maxsize

  def __getitem__(self, b):
    parts = []
    for s, (n, rows) in enumerate(zip(self.sizes, self.rows)):
      pos = np.arange(b * rows, (b + 1) * rows, dtype=np.int64)
      epoch, i = np.divmod(pos, n)
      out = np.empty_like(pos)
      for e in np.unique(epoch):  # a batch spans at most two epochs of a source
        here = epoch == e
        out[here] = permuted(i[here], n, [self.seed, s], int(e))
      parts.append(out + self.offsets[s])
    return np.concatenate(parts)


class Sources:
  """Windows of several sources as one split: global index = source offset + the source's own index.

  `batches(batch_size, seed)` is the training order (pipeline.train_iterator uses it when a split
  has one); evaluation walks the indices in order, source after source."""

  def __init__(self, windows, weights):
    self.windows, self.weights = list(windows), list(weights)
    self.ends = np.cumsum([len(w) for w in self.windows]).astype(np.int64)

  def __len__(self):
    return int(self.ends[-1])

  def batches(self, batch_size, seed):
    return WindowOrder([len(w) for w in self.windows], self.weights, batch_size, seed)

  def gather(self, indices_B):
    indices_B = np.asarray(indices_B, np.int64)
    source = np.searchsorted(self.ends, indices_B, side="right")
    starts = self.ends - [len(w) for w in self.windows]
    parts, order = [], []
    for s in np.unique(source):
      here = np.flatnonzero(source == s)
      parts.append(self.windows[s].gather(indices_B[here] - starts[s]))
      order.append(here)
    back = np.argsort(np.concatenate(order), kind="stable")
    return {k: np.concatenate([p[k] for p in parts])[back] for k in parts[0]}


@dataclasses.dataclass
class Prepared:
  """One prepared directory, checked: every shard is there with the size and fingerprint the manifest says."""
  directory: str
  manifest: dict

  @classmethod
  def open(cls, directory):
    manifest = read_manifest(directory)
    if manifest.get("format") != FORMAT or not manifest.get("complete"):
      raise errors.UserError(f"{directory} is {'not a finished' if manifest.get('format') == FORMAT else 'an unknown'}"
                             f" prepared corpus ({MANIFEST}): run python -m bigmodel.prepare with --out={directory} "
                             "again to finish it.")
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split in SPLITS:
      for shard in manifest["shards"][split]:
        path = os.path.join(directory, shard["file"])
        if not os.path.exists(path):
          raise errors.NotFound(f"Shard {path} is missing: prepare the corpus again (same command).")
        if os.path.getsize(path) != shard["tokens"] * itemsize:
          raise errors.UserError(f"Shard {path} has {os.path.getsize(path):,} bytes, but {MANIFEST} says "
                                 f"{shard['tokens'] * itemsize:,}: it is truncated or another corpus's. Delete it "
                                 "and prepare the corpus again (same command): finished shards are kept.")
        if fingerprint(path) != shard["fingerprint"]:
          raise errors.UserError(f"Shard {path} is not the one {MANIFEST} lists (its content differs): it is "
                                 "another corpus's or damaged. Delete it and prepare the corpus again.")
    return cls(directory, manifest)

  def tokens(self, split):
    shards = self.manifest["shards"][split]
    return Shards([os.path.join(self.directory, s["file"]) for s in shards], [s["tokens"] for s in shards],
                  self.manifest["dtype"])

  def bytes_per_token(self, split):
    return self.manifest["text_bytes"][split] / max(1, sum(s["tokens"] for s in self.manifest["shards"][split]))


def _check_tokenizer(c, prepared):
  """A run that names a tokenizer (data.tokenizer, or init.hf's) must read the corpus it was prepared with."""
  if not c.tokenizer or c.tokenizer in ("char", "bpe"):  # those are made from a corpus: the prepared one is it
    return
  from bigmodel.data import text  # the same lookup as text corpora: a name, a directory or a hub id
  wanted = text.tokenizer_for(c, train_text="")  # byte, a saved one or a checkpoint's: needs no text
  with tempfile.TemporaryDirectory() as tmp:
    wanted.save(tmp)
    digest = tokenizer_hash(tmp)
  if digest != prepared.manifest["tokenizer"]["sha256"]:
    raise errors.UserError(
        f"{prepared.directory} was prepared with tokenizer {prepared.manifest['tokenizer']['name']!r}, but this run "
        f"reads text with {c.tokenizer!r} (data.tokenizer, or init.hf's): they differ. Prepare the corpus with "
        f"--tokenizer={c.tokenizer}, or leave data.tokenizer empty without init.hf.")


@register("tokens")
def load_tokens(c) -> Dataset:
  paths = [c.path] if isinstance(c.path, str) else list(c.path)
  if not paths or not all(paths):
    raise errors.UserError("data.name='tokens' needs data.path: a directory made by python -m bigmodel.prepare, "
                           "or a list of them (mixed by data.weights).")
  weights = list(c.weights) or [1.0] * len(paths)
  if len(weights) != len(paths) or min(weights) <= 0:
    raise errors.UserError(f"data.weights={tuple(c.weights)} must give one positive weight per data.path "
                           f"({len(paths)}).")
  if min(rows_per_source(weights, c.batch_size)) < 1:
    raise errors.UserError(f"data.weights={tuple(weights)} leave a source no row of a batch of {c.batch_size}: "
                           "raise its weight or data.batch_size.")
  prepared = [Prepared.open(p) for p in paths]
  first = prepared[0]
  for other in prepared[1:]:
    if other.manifest["tokenizer"]["sha256"] != first.manifest["tokenizer"]["sha256"]:
      raise errors.UserError(f"{first.directory} and {other.directory} were prepared with different tokenizers "
                             f"({first.manifest['tokenizer']['name']!r}, {other.manifest['tokenizer']['name']!r}): "
                             "a mixture needs one.")
  for p in prepared:
    _check_tokenizer(c, p)
  from bigmodel.data import text
  splits, bytes_per_token = {}, {}
  for split, stride in (("train", 1), ("val", c.seq_len)):
    windows = []
    for p in prepared:
      n = len(p.tokens(split))
      if n < c.seq_len + 1:
        raise errors.UserError(f"The {split} split of {p.directory} has {n:,} tokens, fewer than data.seq_len + 1 = "
                               f"{c.seq_len + 1}.")
      windows.append(text.Windows(p.tokens(split), c.seq_len, stride))
    splits[split] = Sources(windows, weights)
    bytes_per_token[split] = float(np.mean([p.bytes_per_token(split) for p in prepared]))
  return text.lm_dataset(c, tokenizers.load(first.directory), splits, bytes_per_token)

