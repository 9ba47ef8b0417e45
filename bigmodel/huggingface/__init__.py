"""Hugging Face checkpoints in and out: GPT-2, BERT, ViT, ResNet and Llama-shaped, one file per family.

A run starts from one with `init.hf`: a hub id ("gpt2", "bert-base-uncased",
"google/vit-base-patch16-224", "microsoft/resnet-50"; downloaded once into the Hugging Face
cache), a local directory holding what `save_pretrained` writes (config.json,
model.safetensors, the tokenizer files), or a llama.cpp GGUF file of a Llama (gguf.py: its
metadata stands for config.json, its tensors are read under transformers' names). Its config.json
gives the architecture and sizes (`model_config`); the run's own config chooses the task, and keys
it sets win.

Each family's file (gpt2.py, bert.py, vit.py, resnet.py, llama.py) holds its config mapping, with what it
refuses (a checkpoint that computes something else than our model must not load without a word),
and its table: for every array of ours, which checkpoint tensor(s) it is made of and how
(tensors.py). A new family is one more such file, named in FAMILIES. files.py reads the files:
`load` takes the tensors one at a time and puts each straight onto its array's final sharding, so
a big checkpoint never sits whole in host memory. `save` writes the reverse, for GPT-2 and BERT.
The tables name unscanned blocks (`block0/...`); a model with `scan_layers` loads and saves them
layer by layer into and out of its stacked arrays (models/stack.py).
"""
import json
import os
import re

import jax
import numpy as np

from bigmodel import errors, models, paths
from bigmodel.huggingface import bert, files as files_lib, gguf, gpt2, llama, resnet, vit
from bigmodel.huggingface.files import FILES, local_dir, read_config  # noqa: F401 (the API)
from bigmodel.models import stack

FAMILIES = {kind: family for family in (gpt2, bert, vit, resnet, llama)  # model_type in config.json -> its file
            for kind in getattr(family, "MODEL_TYPES", (family.MODEL_TYPE,))}
ARCHITECTURES = {name: family.ARCHITECTURES for name, family in FAMILIES.items()}  # the classes whose files load
# Architectures asked for often that no family computes, and why (the refusal names it).
UNSUPPORTED = {"mixtral": "its MLP is a mixture of experts", "qwen2_moe": "its MLP is a mixture of experts",
               "gemma": "it scales its embeddings and offsets its RMSNorm weights",
               "gemma2": "it soft-caps its logits and alternates sliding-window layers"}


def _family(hf):
  family = FAMILIES.get(hf.get("model_type"))
  if family is None:
    supported = ", ".join(dict.fromkeys(a for archs in ARCHITECTURES.values() for a in archs))
    why = f" ({UNSUPPORTED[hf['model_type']]})" if hf.get("model_type") in UNSUPPORTED else ""
    raise errors.UserError(f"Hugging Face architecture {', '.join(hf.get('architectures') or [str(hf.get('model_type'))])} "
                           f"(model_type {hf.get('model_type')!r}) is not supported{why}. Supported: {supported}.")
  return family


def _read_config(name):
  """Checkpoint `name`'s config.json; a GGUF file's metadata as the config.json it stands for."""
  return gguf.hf_config(name) if gguf.is_gguf(name) else read_config(name)


def model_config(name):
  """Our `model` config section for checkpoint `name`: the model and its sizes, from config.json."""
  hf = _read_config(name)
  family = _family(hf)

  def require(key, allowed, why):
    """Refuses a checkpoint whose config sets `key` outside `allowed` (the first is transformers' default):
    its model computes something else than ours, and would load without a word. `why` says what."""
    value = hf.get(key, allowed[0])
    if value not in allowed:
      raise errors.UserError(f"This {hf['model_type']} checkpoint has {key}={value!r}: {why}. bigmodel's model "
                             f"computes {key}={allowed[0]!r} only, so it does not load it.")
  return family.model_config(hf, require)


def _model_class(model):
  """The flax class our `model` config section builds (None for a name no model registers)."""
  return models.MODELS[model["name"]][0] if model["name"] in models.MODELS else None


def _ours(model):
  """The family an export of our `model` config section is written as: the first in FAMILIES whose files load
  into its class (a checkpoint is read by its own model_type: `_family`), or a UserError for a model no
  checkpoint maps onto."""
  family = next((f for f in FAMILIES.values() if f.MODEL is _model_class(model)), None)
  if family is None:
    raise errors.UserError(f"model.name={model['name']!r} maps onto no Hugging Face checkpoint: GPT-2, BERT, ViT, "
                           "ResNet and Llama-shaped ones load into models gpt, bert, vit, resnet and llama.")
  return family


# ---- Import ----

def load(name, model, params, model_state=None, reinit=()):
  """Returns (params, model_state, message): the arrays of checkpoint `name` in our layout.

  `model` is our model config section; `params` and `model_state` give each array's shape, dtype and
  sharding (arrays, or jax.ShapeDtypeStructs with shardings: nothing is initialised then). An array
  matching a `reinit` regex (our path, e.g. "^head/") keeps its value; so does a head the checkpoint
  lacks. A shape that does not fit names the parameter."""
  if gguf.is_gguf(name):  # a llama.cpp file: its tensors under transformers' names, dequantized as read
    hf, files, read = gguf.hf_config(name), gguf.tensor_files(name), gguf.read
  else:
    directory = files_lib.local_dir(name)
    hf, files, read = files_lib.read_config(directory), files_lib.tensor_files(directory), files_lib.read
  kind = hf.get("model_type")
  family = _family(hf)  # chosen by the checkpoint's model_type: several families may load into one class
  if family.MODEL is not _model_class(model):
    raise errors.UserError(f"init.hf={name!r} is a {kind} checkpoint; model.name={model['name']!r} cannot "
                           "take it. Leave model.name out: the checkpoint's config.json chooses the model.")
  table = family.table(model)
  find = lambda n: files_lib.find(files, n, family.PREFIX)
  heads = {spec.head for spec in table.values() if spec.head and any(find(n) for n in spec.names)}
  fresh, problems, used = [], [], set()

  def one(prefix):
    def put(ours, leaf):
      full = f"{prefix}/{ours}" if prefix == "params" else ours
      spec = table.get(full)
      found = None if spec is None else [find(n) for n in spec.names]
      if spec is None or any(re.search(r, ours) for r in reinit) or (spec.head and spec.head not in heads):
        if isinstance(leaf, jax.ShapeDtypeStruct):
          raise errors.UserError(f"{full} is not in checkpoint {name!r} and has no initial value to keep.")
        fresh.append(ours)
        return leaf
      if None in found:
        missing = spec.names[found.index(None)]
        part = f" (its {spec.head} head is there in part)" if spec.head else ""
        raise errors.UserError(f"Checkpoint {name!r} has no tensor {missing!r} (for {full}){part}: is it complete?")
      value = spec.load([read(files, n) for n in found], tuple(leaf.shape))
      if tuple(value.shape) != tuple(leaf.shape):
        problems.append(f"  {full}: checkpoint {', '.join(found)} gives {tuple(value.shape)}, this model has "
                        f"{tuple(leaf.shape)}")
        return leaf
      used.update(found)
      value = np.asarray(value, dtype=leaf.dtype)
      sharding = getattr(leaf, "sharding", None)
      return jax.device_put(value, sharding) if sharding is not None else value
    return put

  def load_tree(prefix, tree):
    """`tree` with its arrays read from the checkpoint, one layer at a time where its blocks are scanned: the
    table names unscanned blocks (models/stack.py)."""
    names, leaves, treedef = paths.flatten(tree)
    ours = [p.removeprefix("params/") if prefix == "params" else p for p in table]
    layers = stack.relayout(dict(zip(names, leaves)), ours)
    loaded = stack.relayout({path: one(prefix)(path, leaf) for path, leaf in layers.items()}, names)
    placed = lambda name, leaf: (jax.device_put(loaded[name], leaf.sharding)
                                 if stack.is_stacked(name) and getattr(leaf, "sharding", None) else loaded[name])
    return jax.tree.unflatten(treedef, [placed(name, leaf) for name, leaf in zip(names, leaves)])

  params = load_tree("params", params)
  model_state = load_tree("state", model_state or {})
  if problems:
    raise errors.UserError(f"Checkpoint {name!r} does not fit this model:\n" + "\n".join(problems) +
                           "\nLeave the model's sizes to the checkpoint's config.json, or start those arrays "
                           "afresh with init.reinit.")
  unused = sorted(set(files) - used - {n for n in files if n.endswith("num_batches_tracked")})
  source = "GGUF file" if gguf.is_gguf(name) else "Hugging Face checkpoint"
  message = (f"Initialised from {source} {name} ({kind}): {len(used)} tensors; fresh: "
             f"{paths.listed(fresh)}; unused from the checkpoint: {paths.listed(unused)}")
  return params, model_state, message


# ---- Export ----

def hf_config(model, num_labels=None):
  """The config.json of a Hugging Face model computing what our `model` (config section) computes, or a
  UserError saying why there is none."""
  family = _ours(model)
  if not hasattr(family, "hf_config"):
    raise errors.UserError(f"model.name={model['name']!r} has no Hugging Face export: bigmodel exports GPT-2-shaped "
                           "(model.name=gpt), BERT-shaped (model.name=bert) and Llama-shaped (model.name=llama) models.")
  return family.hf_config(model, num_labels)


def save(directory, model, params, tokenizer=None):
  """Writes `params` of our `model` (config section) as a Hugging Face checkpoint in `directory`:
  config.json, model.safetensors and, for a Hugging Face tokenizer, tokenizer.json. config.json names
  the tokenizer's start- and end-of-text ids, where it has them, so that transformers' generate stops
  where bigmodel's does."""
  from safetensors.numpy import save_file
  config = hf_config(model)
  config.update({k: v for k, v in (("bos_token_id", getattr(tokenizer, "bos_id", None)),
                                   ("eos_token_id", getattr(tokenizer, "eos_id", None))) if v is not None})
  tensors = tensors_of(model, params)
  os.makedirs(directory, exist_ok=True)
  save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  if tokenizer is not None and getattr(tokenizer, "kind", None) == "hf":
    tokenizer.save(directory)
  return config


def tensors_of(model, params):
  """{transformers' tensor name: float32 array} of `params` of our `model` (config section): what `save` and
  gguf.write write."""
  config = hf_config(model)
  table = _ours(model).table(model)
  names, leaves, _ = paths.flatten({"params": params})
  tensors = {}
  for path, leaf in stack.relayout(dict(zip(names, leaves)), table).items():  # scanned blocks one by one
    spec = table.get(path)
    if spec is None or spec.save is None:
      raise errors.UserError(f"{path} has no place in a Hugging Face {config['architectures'][0]}.")
    tensors.update(zip(spec.names, (np.ascontiguousarray(np.asarray(a, np.float32)) for a in spec.save(leaf))))
  return tensors
