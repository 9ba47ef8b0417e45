"""A published language model (a GGUF file, or a Hugging Face checkpoint directory) as a model dir that
bigmodel.serve and bigmodel.generate run, with no training run: `model_dir(path)`.

It is exported on the fly (bigmodel/export.py's export_lm: the KV-cache functions, the weights as float32,
the tokenizer with its chat template) into a cache, once: $BIGMODEL_CACHE (default ~/.cache/bigmodel)/models/
<name>-<key>, where the key hashes the checkpoint's bytes (the file, or every file of the directory), the context
and the export format, so a changed file, another --max_context or another bigmodel is exported afresh, and the
next start of the same one loads the cached export (and its compilation cache, .jax_cache beside it) at once.
The cache, not a directory beside the checkpoint: the file may sit where one cannot write (a package's).
"""
import hashlib
import os

from bigmodel import errors, model_json

DEFAULT_CONTEXT = 2048  # the KV cache holds --slots rows of the context: SmolLM2's 8,192 x 16 rows is 6 GB


def is_published(path):
  """Whether `path` is a published checkpoint (a .gguf file, or a directory with config.json and no
  model.json), not one of our exports."""
  if os.path.isfile(path):
    return path.endswith(".gguf")
  return (os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))
          and not os.path.exists(os.path.join(path, "model.json")))


def cache_root():
  return os.path.join(os.environ.get("BIGMODEL_CACHE") or os.path.expanduser("~/.cache/bigmodel"), "models")


def _key(path, context):
  """A hash of the checkpoint's bytes, the context and the export format."""
  h = hashlib.sha256(f"{model_json.FORMAT} context={context}\n".encode())
  files = [path] if os.path.isfile(path) else sorted(
      os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
  for file in files:
    h.update(os.path.relpath(file, path).encode() + b"\0")
    with open(file, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()[:16]


def cached_dir(path, context=DEFAULT_CONTEXT):
  """Where the export of checkpoint `path` at this context lives (made or not)."""
  name = os.path.basename(os.path.abspath(path)).removesuffix(".gguf")
  return os.path.join(cache_root(), f"{name}-{_key(path, context)}")


def model_dir(path, context=DEFAULT_CONTEXT, platforms=None, out=None):
  """The model dir of published checkpoint `path` (`out`: its cached_dir), exported now if the cache lacks it,
  for `platforms` (default: this machine's, the cache being its own); its context is the checkpoint's, cut to
  `context` positions."""
  out = out or cached_dir(path, context)
  if os.path.exists(os.path.join(out, "model.json")):
    return out
  if platforms is None:
    import jax
    platforms = ("cuda" if jax.default_backend() == "gpu" else jax.default_backend(),)
  export(path, out, context, platforms)
  return out


def export(path, out, context=DEFAULT_CONTEXT, platforms=("cpu", "cuda")):
  """Exports published checkpoint `path` (a Llama-family GGUF file or Hugging Face directory; a GPT-2's
  directory too) into `out`; returns its model.json."""
  import flax.linen as nn
  import jax
  import numpy as np

  from bigmodel import export as export_lib, huggingface, models
  from bigmodel.data import text
  if context < 1:
    raise errors.UserError(f"The context must be >= 1 position, got {context}.")
  config = huggingface.model_config(path)
  config["max_len"] = min(config.get("max_len") or context, context)
  config.setdefault("num_outputs", config["vocab_size"])
  model = models.build(config)
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), np.zeros((1, 8), np.int32))))
  params, _, _ = huggingface.load(path, config, shapes.pop("params"), shapes)
  tok = text.tokenizer_for(_TokenizerKeys(path), None)
  return export_lib.export_lm(model, params, tok, config["max_len"], out,
                              dict(checkpoint=os.path.abspath(path), model=config), platforms)


class _TokenizerKeys:
  """The data keys text.tokenizer_for reads: the checkpoint's own tokenizer, as init.hf reads it."""

  def __init__(self, path):
    self.tokenizer = path
