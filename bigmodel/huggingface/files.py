"""Reading a Hugging Face checkpoint's files: finding its directory (a local one, or a hub id's files in
the Hugging Face cache), its config.json, and its tensors, one at a time, with safetensors' numpy API
(no torch). Files on the hub differ from what save_pretrained writes today (`find`)."""
import contextlib
import glob
import json
import os

from bigmodel import errors

# What a hub download fetches: the config, the weights and the tokenizer, never PyTorch .bin files.
FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"]


def local_dir(name):
  """The directory of checkpoint `name`: `name` itself, or the hub id's files in the local cache."""
  if os.path.isdir(name):
    return name
  if name.startswith((".", "/")) or name.count("/") > 1:
    raise errors.NotFound(f"init.hf={name!r}: no such directory (nor is it a Hugging Face hub id such as "
                          "'gpt2' or 'google/vit-base-patch16-224').")
  import huggingface_hub  # only hub ids need it
  try:
    return huggingface_hub.snapshot_download(name, allow_patterns=FILES)
  except Exception as e:  # offline, unknown id, gated repo: all mean the files are not here
    raise errors.NotFound(
        f"Could not get Hugging Face checkpoint {name!r} from the hub ({type(e).__name__}: {e}). Without a "
        "network, download it elsewhere (huggingface-cli download <id>) and give its directory instead.") from e


def read_config(name):
  """The checkpoint's config.json, as a dict."""
  path = os.path.join(local_dir(name), "config.json")
  if not os.path.exists(path):
    raise errors.NotFound(f"{path} not found: a Hugging Face checkpoint directory holds config.json "
                          "and model.safetensors (what save_pretrained writes).")
  with open(path) as f:
    return json.load(f)


def tensor_files(directory):
  """{tensor name: the .safetensors file holding it}."""
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.exists(index):  # a checkpoint saved in shards
    with open(index) as f:
      return {name: os.path.join(directory, file) for name, file in json.load(f)["weight_map"].items()}
  files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
  if not files:
    found = ", ".join(sorted(os.listdir(directory))) or "nothing"
    raise errors.NotFound(f"No model.safetensors in {directory} (it holds: {found}). bigmodel reads safetensors "
                          "only; save the model with save_pretrained(dir) (safetensors is its default).")
  from safetensors import safe_open
  out = {}
  for file in files:
    with _reading(file):
      with safe_open(file, "numpy") as f:
        out.update({name: file for name in f.keys()})
  return out


@contextlib.contextmanager
def _reading(file):
  """Turns safetensors' errors on a damaged file into one that names the file."""
  try:
    yield
  except Exception as e:
    size = os.path.getsize(file) if os.path.exists(file) else 0
    raise errors.UserError(f"Cannot read {file} ({size:,} bytes): {e}. The file is damaged or incomplete "
                           "(an interrupted download?): download or save it again.") from e


def read(files, name):
  from safetensors import safe_open
  with _reading(files[name]):
    # Opened per tensor: its pages leave memory with it. bfloat16 reads as ml_dtypes' (imported by jax).
    with safe_open(files[name], "numpy") as f:
      return f.get_tensor(name)


OLD_NAMES = {".weight": ".gamma", ".bias": ".beta"}  # LayerNorms in the original BERT checkpoints (bert-base-uncased)


def find(files, name, prefix):
  """The name tensor `name` (as transformers saves it today) has in `files`, or None: files on the hub may
  lack the task model's `prefix` (a base model's do; GPT-2's own has no `transformer.`) and name LayerNorms
  gamma and beta (transformers renames both on load)."""
  bare = [name, *([name[len(prefix):]] if name.startswith(prefix) else [])]
  for n in bare:
    for candidate in (n, *(n[:-len(new)] + old for new, old in OLD_NAMES.items() if n.endswith(new))):
      if candidate in files:
        return candidate
  return None
