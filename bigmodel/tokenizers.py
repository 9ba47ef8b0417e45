"""Tokenizers for language models: bytes, characters, SentencePiece BPE, or a pretrained
checkpoint's own (Hugging Face `tokenizer.json`: GPT-2's byte-level BPE, BERT's WordPiece), one interface.

Every tokenizer has `encode(str, max_len=None) -> int32 array` (at most max_len ids; a checkpoint's
special tokens are kept when it cuts), `decode(ids) -> str`, `vocab_size`, `eos_id` (its end-of-text
token, where generation stops; None for ours: byte, char and BPE have none) and `save(dir)`;
`load(dir)` restores whichever kind was saved there. The trainer saves its
tokenizer in the run's workdir, so generation and fine-tuning use the very same one.

    tok = build("bpe", train_text, vocab_size=1024)   # or "byte", "char"
    ids_N = tok.encode("To be, or not to be")
    tok.save(workdir); load(workdir).decode(ids_N)
"""
import io
import json
import os
import re

import numpy as np

from bigmodel import errors

FILE = "tokenizer.json"  # {"kind": ..., plus what that kind needs}, or a Hugging Face tokenizer.json
BPE_MODEL = "tokenizer.model"  # the SentencePiece model proto, beside FILE


class ByteTokenizer:
  """UTF-8 bytes: vocab 256, needs no training, round-trips any text."""
  kind = "byte"
  vocab_size = 256
  eos_id = None

  def encode(self, text: str, max_len=None) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)[:max_len]

  def decode(self, ids) -> str:
    ids = _in_vocab(ids, self)
    # A sampled sequence may cut a multi-byte character: show U+FFFD rather than fail.
    return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

  def save(self, directory):
    _write_json(directory, {"kind": self.kind})

  @classmethod
  def from_text(cls, text=None):
    del text  # nothing to learn
    return cls()


class CharTokenizer:
  """One id per character of the text it was built from (ids in sorted character order)."""
  kind = "char"
  eos_id = None

  def __init__(self, chars: str):
    self.chars = "".join(sorted(set(chars)))
    self.vocab_size = len(self.chars)
    self._codepoints = np.frombuffer(self.chars.encode("utf-32-le"), np.uint32)  # sorted, like chars

  @classmethod
  def from_text(cls, text: str):
    if not text:
      raise errors.UserError("A char tokenizer needs non-empty text to take its characters from.")
    return cls(text)

  def encode(self, text: str, max_len=None) -> np.ndarray:
    codepoints_N = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    ids_N = np.searchsorted(self._codepoints, codepoints_N)
    unknown = np.flatnonzero(self._codepoints[np.minimum(ids_N, self.vocab_size - 1)] != codepoints_N)
    if unknown.size:
      i = int(unknown[0])
      raise errors.UserError(
          f"Character {text[i]!r} (U+{ord(text[i]):04X}) at position {i} is not among this char "
          f"tokenizer's {self.vocab_size} characters ({unknown.size} unknown in all). Build it from text "
          "that contains every character you will encode, or use the 'byte' tokenizer.")
    return ids_N.astype(np.int32)[:max_len]

  def decode(self, ids) -> str:
    return "".join(self.chars[i] for i in _in_vocab(ids, self).tolist())

  def save(self, directory):
    _write_json(directory, {"kind": self.kind, "chars": self.chars})


class BpeTokenizer:
  """SentencePiece BPE, set up to reproduce text exactly: no normalization, no dummy prefix,
  spaces kept as they are, "\\n" a token of its own, unseen characters as UTF-8 byte tokens
  (`byte_fallback`). The one exception: a literal U+2581 '▁' (SentencePiece's space symbol)
  decodes to a space. No BOS/EOS/pad ids; id 0 is <unk>, which byte fallback leaves unused
  (with `byte_fallback=False`, unseen characters become <unk> and decode as ' ⁇ ')."""
  kind = "bpe"
  eos_id = None

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm  # only this tokenizer needs it
    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self.sp.get_piece_size()
    self.newline_id = self.sp.piece_to_id("\n")

  @classmethod
  def from_text(cls, text: str, vocab_size: int = 1024, byte_fallback: bool = True, num_threads: int = 1):
    import sentencepiece as spm
    model = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(text.split("\n")), model_writer=model, model_type="bpe",
          vocab_size=vocab_size, character_coverage=1.0, byte_fallback=byte_fallback,
          normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
          allow_whitespace_only_pieces=True, user_defined_symbols=["\n"],
          max_sentence_length=1 << 20,  # in bytes; longer lines would be silently skipped
          unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, num_threads=num_threads, minloglevel=2)
    except RuntimeError as e:
      needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
      if needed:
        raise errors.UserError(
            f"BPE vocab_size={vocab_size} is too small for this text: its characters"
            f"{' plus the 256 fallback bytes' if byte_fallback else ''} and the special tokens need "
            f"{needed.group(1)}. Use vocab_size >= {needed.group(1)}.") from None
      raise errors.UserError(f"SentencePiece could not train a BPE vocabulary of {vocab_size} on "
                             f"{len(text):,} characters: {e}") from e
    return cls(model.getvalue())

  def encode(self, text: str, max_len=None) -> np.ndarray:
    # Line by line is ~3x faster than one long string and gives the same ids: no piece spans "\n".
    ids = []
    for line_ids in self.sp.encode(text.split("\n")):
      ids += line_ids
      ids.append(self.newline_id)
    return np.asarray(ids[:-1], np.int32)[:max_len]

  def decode(self, ids) -> str:
    return self.sp.decode(_in_vocab(ids, self).tolist())

  def save(self, directory):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, BPE_MODEL), "wb") as f:
      f.write(self.model_proto)
    _write_json(directory, {"kind": self.kind, "vocab_size": self.vocab_size, "model": BPE_MODEL})


class HfTokenizer:
  """A Hugging Face checkpoint's tokenizer (its tokenizer.json), run by the `tokenizers` library: the ids
  `transformers.AutoTokenizer` gives, special tokens included (BERT's [CLS] ... [SEP]). `mask_id` is
  its [MASK] token, which masked-LM training uses (data/mlm.py); `eos_id` and `bos_id` its end- and
  start-of-text tokens (GPT-2's <|endoftext|> is both), as tokenizer_config.json names them, else as
  transformers' tokenizer classes default them; each None if it has none.

  A published tokenizer.json may switch on padding and truncation (all-MiniLM-L6-v2's pads and cuts
  every text to 128 ids); AutoTokenizer ignores them for one text, and so does this class: a review
  would otherwise end in a run of [PAD] ids (id 0, which our -1 convention does not mask) and a whole
  corpus be cut to 128 ids. The files beside it that tell transformers how to read it
  (tokenizer_config.json: do_lower_case, the special tokens, the chat template) travel with it in `save`."""
  kind = "hf"
  COMPANIONS = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")  # bigmodel/chat.py

  def __init__(self, tokenizer, companions=None):
    tokenizer.no_padding()
    tokenizer.no_truncation()
    self.tokenizer = tokenizer
    self.companions = companions or {}  # file name -> its text
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    found = [tokenizer.token_to_id(t) for t in ("[MASK]", "<mask>")]
    self.mask_id = next((i for i in found if i is not None), None)
    self.eos_id, self.bos_id = self._special_id("eos_token"), self._special_id("bos_token")

  @classmethod
  def from_file(cls, path):
    from tokenizers import Tokenizer  # the Hugging Face library, not this module
    directory = os.path.dirname(path)
    companions = {}
    for name in cls.COMPANIONS:
      if os.path.exists(os.path.join(directory, name)):
        with open(os.path.join(directory, name), encoding="utf-8") as f:
          companions[name] = f.read()
    return cls(Tokenizer.from_file(path), companions)

  def encode(self, text: str, max_len=None) -> np.ndarray:
    encoding = self.tokenizer.encode(text, add_special_tokens=False)
    if max_len is not None:  # cut the text, not its special tokens, as transformers' truncation=True does
      encoding.truncate(max(max_len - self.tokenizer.num_special_tokens_to_add(False), 0))
    ids = self.tokenizer.post_process(encoding).ids
    return np.asarray(ids[:max_len], np.int32)

  def decode(self, ids) -> str:
    return self.tokenizer.decode(_in_vocab(ids, self).tolist(), skip_special_tokens=False)

  def save(self, directory):
    os.makedirs(directory, exist_ok=True)
    self.tokenizer.save(os.path.join(directory, FILE))
    companions = self.companions or {"tokenizer_config.json": json.dumps(self._config(), indent=2)}
    for name, text in companions.items():
      with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        f.write(text)

  def _special_id(self, role):
    """The id of its `role` token ("eos_token"), as its tokenizer_config.json (or special_tokens_map.json)
    names it, where it does: the gpt2 hub repo's names none, and GPT2Tokenizer takes <|endoftext|>, as
    `_config` does from the vocabulary. None if it has none."""
    config = next((c for c in (json.loads(self.companions.get(n) or "{}") for n in self.COMPANIONS
                               if n.endswith(".json")) if role in c),
                  self._config())
    token = config.get(role)
    token = token.get("content") if isinstance(token, dict) else token  # {"content": "</s>", "lstrip": ...}
    return None if token is None else self.tokenizer.token_to_id(token)

  def _config(self):
    """A tokenizer_config.json for a tokenizer that came without one: without it AutoTokenizer reads a
    BERT's tokenizer.json with do_lower_case=True, whatever its normalizer does. It names the class that
    runs tokenizer.json as it is, and the special tokens that it holds."""
    vocab = self.tokenizer.get_vocab(with_added_tokens=True)
    roles = {"unk_token": ("[UNK]", "<unk>", "<|endoftext|>"), "sep_token": ("[SEP]",), "pad_token": ("[PAD]", "<pad>"),
             "cls_token": ("[CLS]",), "mask_token": ("[MASK]", "<mask>"), "bos_token": ("<s>", "<|endoftext|>"),
             "eos_token": ("</s>", "<|endoftext|>")}
    config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for role, names in roles.items():
      found = next((n for n in names if n in vocab), None)
      if found:
        config[role] = found
    return config


def _in_vocab(ids, tokenizer) -> np.ndarray:
  ids = np.asarray(ids)
  if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
    raise errors.UserError(f"Ids must be in [0, {tokenizer.vocab_size - 1}] for this {tokenizer.kind} tokenizer, "
                           f"got {ids.min()}..{ids.max()}: were they made by another tokenizer?")
  return ids


TOKENIZERS = {"byte": ByteTokenizer, "char": CharTokenizer, "bpe": BpeTokenizer}


def _known(name):
  if name not in TOKENIZERS:
    raise errors.UserError(f"Unknown tokenizer {name!r}. Known: {', '.join(TOKENIZERS)}.")
  return TOKENIZERS[name]


def build(name: str, text: str = "", **kwargs):
  """The tokenizer `name` made from `text` (byte ignores it; bpe takes `vocab_size=`...)."""
  return _known(name).from_text(text, **kwargs)


def _write_json(directory, record):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, FILE), "w", encoding="utf-8") as f:
    json.dump(record, f, ensure_ascii=False)


def load(directory):
  """The tokenizer saved in `directory` by `save`, of whichever kind it was."""
  path = os.path.join(directory, FILE)
  if not os.path.exists(path):
    raise errors.NotFound(f"No tokenizer in {directory}/ ({FILE} missing). Save one there with "
                          "tokenizer.save(directory), or build one: tokenizers.build(name, text).")
  with open(path, encoding="utf-8") as f:
    record = json.load(f)
  if "kind" not in record and "model" in record:  # a Hugging Face tokenizer.json
    return HfTokenizer.from_file(path)
  kind = _known(record["kind"])
  if kind is ByteTokenizer:
    return ByteTokenizer()
  if kind is CharTokenizer:
    return CharTokenizer(record["chars"])
  with open(os.path.join(directory, record["model"]), "rb") as f:
    return BpeTokenizer(f.read())
