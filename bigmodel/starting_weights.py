"""Where a new run's weights come from: the `init` keys, and reading them in.

A run that has no checkpoint of its own to resume starts from its model's initialisation, or from
  - another run's parameters (`init.checkpoint`: fine-tuning), matched by parameter path, so a new head or
    extra layers start fresh (`merge_by_path`);
  - a published checkpoint (`init.hf`: Hugging Face or GGUF, read by bigmodel/huggingface/), tensor by tensor
    onto each parameter's sharding.
`init.reinit` names the arrays that start afresh either way. The trainer calls `load` once, from
train.restore_or_start. Both sources take checkpoints of either layer layout (`model.scan_layers`,
models/stack.py) into either.
"""
import re

import jax

from bigmodel import errors, huggingface, paths, workdir as workdir_lib
from bigmodel.models import stack
from bigmodel.registry import Key

INIT_KEYS = dict(
    checkpoint=Key("", "start from this run's parameters: a workdir (newest step) or <workdir>/checkpoints/<step>"),
    hf=Key("", "or from a published checkpoint: a Hugging Face hub id ('gpt2'), a local save_pretrained directory, "
               "or a Llama-architecture .gguf file; its config (config.json, the GGUF's metadata) gives the model "
               "(bigmodel/huggingface/), the keys under `model` override it"),
    reinit=Key(("^head/",), "regexes on parameter paths that start afresh instead (the classifier head)"),
)


def load(c, model, params, model_state, sharding):
  """(params, model_state, message): the initialised `params` and `model_state` with the arrays that the `init`
  section `c` names read in (`model`: the run's model config section; `sharding`: where a run's arrays are read
  to before they are merged)."""
  if c.hf:
    return huggingface.load(c.hf, model, params, model_state, c.reinit)
  stored_params, stored_state, step = workdir_lib.read_weights(c.checkpoint, sharding)  # a LoRA run's merged
  stored = {name: x for tree in (stored_params, stored_state) for name, x in zip(*paths.flatten(tree)[:2])}
  params, model_state, fresh, used, problems = merge_by_path(stored, params, model_state, c.reinit)
  if problems:
    raise errors.UserError(f"init.checkpoint {c.checkpoint} (step {step}) does not fit this model:\n" +
                           "\n".join(problems) + "\nStart those parameters afresh by adding a regex that matches "
                           "them to init.reinit, or change the model config to match the checkpoint.")
  if not used:
    raise errors.UserError(f"init.checkpoint {c.checkpoint} (step {step}) shares no parameter path with this "
                           f"model: it was made by a different architecture. Checkpoint arrays: "
                           f"{', '.join(sorted(stored)[:8])}, ...")
  message = (f"Initialised {len(used)} arrays from {c.checkpoint} (step {step}); fresh: "
             f"{paths.listed(fresh)}; unused from the checkpoint: {len(set(stored) - used)}")
  return params, model_state, message


def merge_by_path(stored, params, model_state, reinit):
  """(params, model_state, fresh paths, used paths, problems): `params` and `model_state` with each array taken
  from `stored` ({path: array}) where its path is there with the same shape. An array matching a `reinit`
  regex, or absent from `stored`, keeps its value; a shape that differs is a problem, named."""
  stored = stack.relayout(stored, [*paths.flatten(params)[0], *paths.flatten(model_state)[0]])  # our layer layout
  fresh, problems, used = [], [], set()

  def merge(keypath, leaf):
    path = paths.keystr(keypath)
    if any(re.search(r, path) for r in reinit) or path not in stored:
      fresh.append(path)
      return leaf
    if stored[path].shape != leaf.shape:
      problems.append(f"  {path}: checkpoint has {tuple(stored[path].shape)}, this model {tuple(leaf.shape)}")
      return leaf
    used.add(path)
    return stored[path].astype(leaf.dtype)

  params = jax.tree_util.tree_map_with_path(merge, params)
  model_state = jax.tree_util.tree_map_with_path(merge, model_state)
  return params, model_state, fresh, used, problems
