"""GGUF files (llama.cpp, Ollama, LM Studio) in and out, for Llama-architecture models.

In: `init.hf=<a .gguf file>` reads one as if it were a Hugging Face checkpoint. Its metadata becomes the
config.json a LlamaForCausalLM would have (`hf_config`), so llama.py maps it onto our model as it maps
every Llama; its tensors are named back to transformers' names, dequantized to float32 by the `gguf`
package itself (`read`), and their rows put back in order (`_unpermute`); its tokenizer is rebuilt
from the metadata into a `tokenizers` Tokenizer (`tokenizer`), with its special tokens and chat template
in the tokenizer_config.json that travels with it, so a run, its exports and a server read them as they
read a Hugging Face checkpoint's.

Out: `write` turns a Llama's Hugging Face tensors (huggingface.tensors_of) into a GGUF file, in F32,
F16, BF16 or Q8_0, the metadata and tokenizer written the way llama.cpp's convert_hf_to_gguf.py writes them.

llama.cpp's convention, the one thing to know: its rotary embedding turns channels (2i, 2i + 1) of a
head together, where transformers' (and ours) turns (i, i + K/2). Its converter reorders the rows of
the query and key projections so that the same model comes out; reading undoes that, writing redoes it.
"""
import functools
import json
import os

import numpy as np

from bigmodel import errors

SUFFIX = ".gguf"
ARCHITECTURES = ("llama",)  # general.architecture values that load
# Tensor types that load: what the gguf package dequantizes and llama.cpp writes for Llamas.
LOADS = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
WRITES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}  # export --dtype -> tensor type
FILE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q8_0": "MOSTLY_Q8_0"}

# tokenizer.ggml.pre -> the regex that splits text before byte-level BPE (llama.cpp's llama-vocab.cpp
# has the same table); None: GPT-2's own split (ByteLevel's use_regex), "digits": SmolLM's, which
# splits every digit off first.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
           r"|\s+(?!\S)|\s+")
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
PRE_TOKENIZERS = {"gpt-2": None, "default": None, "gpt2": None, "smollm": "digits", "llama-bpe": _LLAMA3,
                  "llama3": _LLAMA3, "llama-v3": _LLAMA3, "qwen2": _QWEN2}


SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
               "pad_token": "padding_token_id"}  # tokenizer_config.json's names -> tokenizer.ggml.*'s


def is_gguf(name):
  return isinstance(name, str) and name.endswith(SUFFIX)


def _reader(path):
  if not os.path.isfile(path):
    raise errors.NotFound(f"init.hf={path!r}: no such file.")
  stat = os.stat(path)
  return _read(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read(path, mtime, size):
  """The gguf package's reader of the file, once per process: it parses every token of the vocabulary
  into a field of its own (10 s for SmolLM2's 49,152 on a busy 2-core CPU), and a load asks three times."""
  del mtime, size  # the cache key: a file written again is read again
  import gguf  # only GGUF files need it
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # a damaged or truncated download
    raise errors.UserError(f"Cannot read {path} as a GGUF file ({type(e).__name__}: {e}): is it complete?") from e


def metadata(reader):
  """{key: value} of every metadata field (strings, numbers, lists)."""
  return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


# ---- In ----

def hf_config(path):
  """The config.json a LlamaForCausalLM computing what the GGUF file at `path` computes would have."""
  reader = _reader(path)
  meta = metadata(reader)
  arch = meta.get("general.architecture")
  if arch not in ARCHITECTURES:
    raise errors.UserError(f"{path} is a GGUF of architecture {arch!r}; bigmodel loads {', '.join(ARCHITECTURES)} "
                           "GGUF files only.")
  get = lambda key, default=None: meta.get(f"{arch}.{key}", default)
  if get("expert_count"):
    raise errors.UserError(f"{path} is a mixture of experts ({get('expert_count')} experts): bigmodel's Llama "
                           "has one MLP per layer, so it does not load it.")
  heads, dim = get("attention.head_count"), get("embedding_length")
  names = {t.name for t in reader.tensors}
  vocab = get("vocab_size") or len(meta.get("tokenizer.ggml.tokens") or ()) or _embedding_rows(reader)
  scaling = get("rope.scaling.type", "none")
  if scaling not in ("none", "linear"):
    raise errors.UserError(f"{path} scales its rotary positions with {scaling!r}; bigmodel reads GGUF files "
                           "without rotary scaling, with linear scaling or Llama 3's. Load the Hugging Face "
                           "checkpoint instead.")
  head_dim = get("attention.key_length") or get("rope.dimension_count") or dim // heads
  rope = dict(rope_type="default", rope_theta=float(get("rope.freq_base", 10_000.0)))
  if scaling == "linear":
    rope = dict(rope, rope_type="linear", factor=float(get("rope.scaling.factor")))
  if "rope_freqs.weight" in names:  # Llama 3.1's: a divisor per frequency instead of its four settings
    rope = _llama3_rope(path, next(t for t in reader.tensors if t.name == "rope_freqs.weight"), head_dim, rope)
  special = {f"{role}_token_id": meta.get(f"tokenizer.ggml.{role}_token_id") for role in ("bos", "eos")}
  return dict(architectures=["LlamaForCausalLM"], model_type="llama", num_hidden_layers=get("block_count"),
              num_attention_heads=heads, num_key_value_heads=get("attention.head_count_kv") or heads,
              hidden_size=dim, head_dim=head_dim,
              intermediate_size=get("feed_forward_length"), max_position_embeddings=get("context_length"),
              vocab_size=vocab, rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
              hidden_act="silu", tie_word_embeddings="output.weight" not in names, rope_parameters=rope,
              attention_bias="blk.0.attn_q.bias" in names, **special)


def _llama3_rope(path, tensor, head_dim, rope):
  """Llama 3's rotary settings from the divisors llama.cpp's converter wrote in their place (rope_freqs):
  1 for the high frequencies, `factor` for the low ones, 1 / ((1 - s) / factor + s) between, where s is
  linear in 1 / wavelength. Only the ratios original_max_len : low : high_freq_factor show in them, so
  low_freq_factor is taken as 1 (Llama 3.1's and 3.2's own); settings that do not give the divisors back
  exactly are refused."""
  from gguf import quants
  from bigmodel.models import llama
  divisors = np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), np.float64).reshape(-1)
  factor, theta = float(divisors.max()), rope["rope_theta"]
  inverse_wavelength = llama.frequencies(head_dim, theta).astype(np.float64) / (2 * np.pi)
  between = (divisors > 1 + 1e-6) & (divisors < factor - 1e-6)
  high, original = 4.0, 8192  # Llama 3.1's, where the blend has too few points to fit
  if between.sum() >= 2:  # s = (original / wavelength - 1) / (high - 1): a line in 1 / wavelength
    s = (1 / divisors[between] - 1 / factor) / (1 - 1 / factor)
    slope, intercept = np.polyfit(inverse_wavelength[between], s, 1)
    high, original = 1 - 1 / intercept, round(-slope / intercept)
  found = dict(rope_type="llama3", rope_theta=theta, factor=factor, low_freq_factor=1.0, high_freq_factor=float(high),
               original_max_position_embeddings=int(original))
  ours = llama.frequencies(head_dim, theta, "llama3", factor, 1.0, float(high), int(original))
  if len(divisors) != head_dim // 2 or not np.allclose(llama.frequencies(head_dim, theta) / ours, divisors, rtol=1e-4):
    raise errors.UserError(f"{path} rescales its rotary frequencies (rope_freqs.weight) in a way Llama 3's settings do "
                           "not reproduce; bigmodel does not load it. Load the Hugging Face checkpoint instead.")
  return found


def _embedding_rows(reader):
  return next(int(t.shape[-1]) for t in reader.tensors if t.name == "token_embd.weight")


def _names(num_layers):
  """gguf's own name map for Llamas: transformers' tensor name -> llama.cpp's."""
  import gguf
  mapping = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, num_layers)

  def to_gguf(name):
    found, suffix = mapping.get_name(name, try_suffixes=(".weight", ".bias")), name[name.rfind("."):]
    return None if found is None else found if found.endswith(suffix) else found + suffix
  return to_gguf


def tensor_files(path):
  """{transformers' tensor name: the file's tensor}: the tensors of the file as `read` takes them. A tensor
  type the gguf package cannot dequantize is refused, naming the tensors."""
  reader = _reader(path)
  config = hf_config(path)
  unsupported = [f"{t.name} ({t.tensor_type.name})" for t in reader.tensors if t.tensor_type.name not in LOADS]
  if unsupported:
    raise errors.UserError(f"{path} holds tensors of types bigmodel does not read: {', '.join(unsupported[:5])}"
                           f"{f' and {len(unsupported) - 5} more' if len(unsupported) > 5 else ''}. It reads "
                           f"{', '.join(LOADS)}.")
  theirs = {t.name: t for t in reader.tensors}
  to_gguf = _names(config["num_hidden_layers"])
  from bigmodel.huggingface import llama
  ours = llama.table(llama.model_config(config, lambda *a: None) | {"pool": "none"})
  out = {}
  for spec in ours.values():
    for name in spec.names:
      if to_gguf(name) in theirs:
        out[name] = (theirs[to_gguf(name)], config)
  return out


def read(files, name):
  """Tensor `name` (transformers') of the file as float32 in transformers' layout."""
  from gguf import quants
  tensor, config = files[name]
  x = quants.dequantize(tensor.data, tensor.tensor_type)
  x = x.reshape([int(n) for n in reversed(tensor.shape)])  # GGUF lists dimensions innermost first
  heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
  kind = name.split(".")[-2]
  return _unpermute(x, heads[kind]) if kind in heads else np.asarray(x, np.float32)


def _permute(x_OxI, heads):
  """transformers' rows -> llama.cpp's: within each head, rows (i, i + K/2) become rows (2i, 2i + 1)."""
  return x_OxI.reshape(heads, 2, x_OxI.shape[0] // heads // 2, *x_OxI.shape[1:]).swapaxes(1, 2).reshape(x_OxI.shape)


def _unpermute(x_OxI, heads):
  """llama.cpp's rows -> transformers': `_permute` undone."""
  return x_OxI.reshape(heads, x_OxI.shape[0] // heads // 2, 2, *x_OxI.shape[1:]).swapaxes(1, 2).reshape(x_OxI.shape)


def tokenizer(path):
  """The file's tokenizer (tokenizer.ggml.*) as a tokenizers.HfTokenizer: byte-level BPE ("gpt2") with the
  pre-tokenizer its `pre` names, or SentencePiece's BPE ("llama"); the tokens it marks as control tokens
  special, its BOS added where it says so; its special tokens and chat template in tokenizer_config.json."""
  from bigmodel import tokenizers
  meta = metadata(_reader(path))
  kind = meta.get("tokenizer.ggml.model")
  builders = {"gpt2": _byte_level, "llama": _sentencepiece}
  if kind not in builders:
    raise errors.UserError(f"{path} has a {kind!r} tokenizer; bigmodel builds {', '.join(builders)} (byte-level BPE "
                           "and SentencePiece BPE) ones from a GGUF file.")
  tokens = meta["tokenizer.ggml.tokens"]
  types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
  tok = builders[kind](meta, tokens, types, path)
  _add_special_tokens(tok, tokens, types)
  config = {"tokenizer_class": "PreTrainedTokenizerFast"}
  for role, key in SPECIAL_IDS.items():
    i = meta.get(f"tokenizer.ggml.{key}")
    if i is not None and 0 <= i < len(tokens):
      config[role] = tokens[i]
  add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))  # llama.cpp adds SentencePiece's BOS
  add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
  config |= dict(add_bos_token=add_bos, add_eos_token=add_eos)
  _post_processor(tok, config.get("bos_token") if add_bos else None, config.get("eos_token") if add_eos else None)
  if meta.get("tokenizer.chat_template"):
    config["chat_template"] = meta["tokenizer.chat_template"]
  return tokenizers.HfTokenizer(tok, {"tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False)})


def _byte_level(meta, tokens, types, path):
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
  pre = meta.get("tokenizer.ggml.pre", "default")
  if pre not in PRE_TOKENIZERS:
    raise errors.UserError(f"{path} splits text with pre-tokenizer {pre!r}, which bigmodel does not know. Known: "
                           f"{', '.join(PRE_TOKENIZERS)}.")
  merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or ()]
  tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, ignore_merges=False))
  split = PRE_TOKENIZERS[pre]
  if split is None:
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  elif split == "digits":
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  else:
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  return tok


def _sentencepiece(meta, tokens, types, path):
  """SentencePiece's BPE as transformers' LlamaTokenizer runs it: ▁ for spaces and before the text,
  characters outside the vocabulary as <0x..> byte tokens. The file holds scores, not merges: a merge is
  every split of a token into two tokens, ranked by the score of the token it makes."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  vocab = {t: i for i, t in enumerate(tokens)}
  merges = meta.get("tokenizer.ggml.merges")
  if merges:
    merges = [tuple(m.split(" ", 1)) for m in merges]
  else:
    scores = meta.get("tokenizer.ggml.scores") or [-float(i) for i in range(len(tokens))]
    found = [(scores[i], vocab[t[:k]], vocab[t[k:]], t[:k], t[k:]) for t, i in vocab.items() if types[i] == 1
             for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab]
    merges = [(a, b) for _, _, _, a, b in sorted(found, key=lambda m: (-m[0], m[1], m[2]))]
  unk = meta.get("tokenizer.ggml.unknown_token_id")
  tok = Tokenizer(models.BPE(vocab, merges, unk_token=tokens[unk] if unk is not None else None, fuse_unk=True,
                             byte_fallback=True))
  prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first" if prefix else "never",
                                               split=False)
  steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
  tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
  return tok


def _add_special_tokens(tok, tokens, types):
  """Control tokens (<|im_start|>, </s>) as special tokens, user-defined ones as added tokens: both are
  matched whole in the text, as llama.cpp matches them, instead of being cut into pieces."""
  from tokenizers import AddedToken
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == 3])
  tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == 4])


def _post_processor(tok, bos, eos):
  """BOS before and EOS after every text, where the file says to add them (None: not added)."""
  from tokenizers import processors
  first, last = [bos] if bos else [], [eos] if eos else []
  if first or last:
    tok.post_processor = processors.TemplateProcessing(
        single=" ".join([*first, "$A", *last]), pair=" ".join([*first, "$A", *last, *first, "$B", *last]),
        special_tokens=[(t, tok.token_to_id(t)) for t in dict.fromkeys(first + last)])


# ---- Out ----

def write(path, model, tensors, tokenizer, dtype="f32"):
  """Writes a GGUF file of our Llama `model` (config section) at `path`: `tensors` are its transformers
  tensors ({name: float32 array}, huggingface.tensors_of), `tokenizer` its tokenizers.HfTokenizer, `dtype`
  one of WRITES. 2-D weights take that type (Q8_0's blocks of 32 need rows of a multiple of 32: others
  are written F16, as llama.cpp's converter does); norms stay F32."""
  import gguf
  from bigmodel.huggingface import llama
  hf = llama.hf_config(model)
  if dtype not in WRITES:
    raise errors.UserError(f"--dtype={dtype!r}: bigmodel writes GGUF as {', '.join(WRITES)}.")
  if model["qkv_bias"] or model["out_bias"] or model["mlp_bias"]:
    raise errors.UserError("This Llama has biases (model.qkv_bias, out_bias, mlp_bias): bigmodel writes GGUF for "
                           "Llamas without them; use --format=hf.")
  qtype = gguf.GGMLQuantizationType[WRITES[dtype]]
  w = gguf.GGUFWriter(path, "llama")
  heads, kv_heads = hf["num_attention_heads"], hf["num_key_value_heads"]
  w.add_block_count(hf["num_hidden_layers"])
  w.add_context_length(hf["max_position_embeddings"])
  w.add_embedding_length(hf["hidden_size"])
  w.add_feed_forward_length(hf["intermediate_size"])
  w.add_head_count(heads)
  w.add_head_count_kv(kv_heads)
  w.add_key_length(hf["head_dim"])
  w.add_value_length(hf["head_dim"])
  w.add_rope_dimension_count(hf["head_dim"])
  w.add_rope_freq_base(float(hf["rope_parameters"]["rope_theta"]))
  if model["rope_scaling"] == "linear":
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(float(model["rope_factor"]))
  w.add_layer_norm_rms_eps(float(hf["rms_norm_eps"]))
  w.add_vocab_size(hf["vocab_size"])
  w.add_file_type(gguf.LlamaFileType[FILE_TYPES[WRITES[dtype]]])
  _write_tokenizer(w, tokenizer, hf["vocab_size"])
  if model["rope_scaling"] == "llama3":  # as llama.cpp's converter writes it: a divisor per frequency
    from bigmodel.models import llama as llama_model
    K = hf["head_dim"]
    w.add_tensor("rope_freqs.weight", llama_model.frequencies(K, model["rope_theta"]) / llama_model.frequencies(
        K, model["rope_theta"], "llama3", model["rope_factor"], model["rope_low_freq_factor"],
        model["rope_high_freq_factor"], model["rope_original_max_len"]))
  to_gguf = _names(hf["num_hidden_layers"])
  for name, x in tensors.items():
    kind = name.split(".")[-2]
    if kind in ("q_proj", "k_proj"):
      x = _permute(x, heads if kind == "q_proj" else kv_heads)
    t = qtype if x.ndim == 2 else gguf.GGMLQuantizationType.F32
    if t not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16) \
        and x.shape[-1] % gguf.GGML_QUANT_SIZES[t][0]:
      t = gguf.GGMLQuantizationType.F16
    w.add_tensor(to_gguf(name), gguf.quants.quantize(np.ascontiguousarray(x, np.float32), t), raw_dtype=t)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _write_tokenizer(w, tokenizer, vocab_size):
  """The tokenizer as llama.cpp's converter writes a byte-level BPE's: its tokens by id (the embedding's rows
  past them as unused [PAD<i>] tokens), their types, the merges, the pre-tokenizer's name, the special ids,
  whether BOS is added, the chat template and its end-of-turn token."""
  import gguf
  from bigmodel import chat
  if getattr(tokenizer, "kind", None) != "hf":
    raise errors.UserError(f"This run's tokenizer is bigmodel's {getattr(tokenizer, 'kind', None)!r}; a GGUF file "
                           "carries a Hugging Face byte-level BPE (GPT-2's, Llama 3's, SmolLM's): train or fine-tune "
                           "with one (init.hf or data.tokenizer).")
  tok = tokenizer.tokenizer
  spec = json.loads(tok.to_str())
  model = spec["model"]
  pre = _pre_name(spec.get("pre_tokenizer"))
  if model.get("type") != "BPE" or pre is None:
    raise errors.UserError("This run's tokenizer is not a byte-level BPE with a pre-tokenizer llama.cpp names "
                           f"({', '.join(sorted(set(PRE_TOKENIZERS)))}): bigmodel writes those into GGUF only.")
  vocab = tok.get_vocab(with_added_tokens=True)
  tokens = [f"[PAD{i}]" for i in range(max(vocab_size, len(vocab)))]
  types = [gguf.TokenType.UNUSED] * len(tokens)
  for t, i in vocab.items():
    tokens[i], types[i] = t, gguf.TokenType.NORMAL
  for i, added in tok.get_added_tokens_decoder().items():
    types[i] = gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre(pre)
  w.add_token_list(tokens)
  w.add_token_types([int(t) for t in types])
  w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
  config = json.loads(tokenizer.companions.get("tokenizer_config.json") or "{}")
  for role, key in SPECIAL_IDS.items():
    token = config.get(role)
    token = token.get("content") if isinstance(token, dict) else token
    if token is not None and tok.token_to_id(token) is not None:
      w.add_uint32(f"tokenizer.ggml.{key}", tok.token_to_id(token))
  bos = tokenizer.bos_id
  w.add_add_bos_token(bos is not None and tokenizer.encode("a")[:1].tolist() == [bos])
  template = chat.template(tokenizer)
  if template is not None:
    w.add_chat_template(template.source)
    if template.end_of_turn_id is not None:
      w.add_eot_token_id(template.end_of_turn_id)


def _pre_name(pre):
  """llama.cpp's name for a byte-level BPE's pre-tokenizer (tokenizer.json's), or None if it has none."""
  steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
  kinds = [s.get("type") for s in steps]
  if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
    return "gpt-2"
  if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
    return "smollm"
  if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
    regex = steps[0].get("pattern", {}).get("Regex")
    return next((name for name, split in PRE_TOKENIZERS.items() if split == regex), None)  # the first: llama.cpp's
  return None
