"""Checkpoints: a thin layer over orbax's CheckpointManager.

A checkpoint holds two items: `state` (the TrainState pytree) and `data` (the
input iterator's position, as JSON). Orbax writes each step into a temporary
directory and renames it when complete, so a killed run never leaves a partial
checkpoint behind, and keeps the newest `keep` steps.

`load_pretrained` starts a new run from another run's parameters (fine-tuning):
arrays are matched by path, so a new head or extra layers start fresh. Hugging Face
checkpoints (`init.hf`) are read by huggingface.py.
"""
import re

import jax
import orbax.checkpoint as ocp
from etils import epath

from bigmodel import paths


def manager(workdir, keep):
  return ocp.CheckpointManager(
      epath.Path(workdir).absolute() / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True),
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})


def save(mngr, step, state, data_state):
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)


INIT_DEFAULTS = dict(
    checkpoint="",  # start from this run's parameters: a workdir (newest step) or <workdir>/checkpoints/<step>
    hf="",  # or from a Hugging Face checkpoint: a hub id ("gpt2") or a local save_pretrained directory; its
            # config.json gives the model (huggingface.py), the keys under `model` override it
    reinit=("^head/",),  # regexes on parameter paths that start afresh instead (the classifier head)
)


def _shapes(tree):
  """{'params/conv0/kernel': (5, 1, 25), ...} for every array leaf."""
  names, leaves, _ = paths.flatten(tree)
  return {name: tuple(leaf.shape) for name, leaf in zip(names, leaves) if hasattr(leaf, "shape")}


def check_compatible(mngr, step, abstract_state):
  """Raises ValueError naming every parameter whose path or shape differs."""
  stored = _shapes(mngr.item_metadata(step)["state"])
  wanted = _shapes(abstract_state)
  problems = [f"  {p}: checkpoint has {stored.get(p, 'nothing')}, model wants {wanted.get(p, 'nothing')}"
              for p in sorted(set(stored) | set(wanted), key=lambda p: (not p.startswith("params/"), p))
              if stored.get(p) != wanted.get(p)]
  if problems:
    raise ValueError(
        f"The checkpoint at step {step} in {mngr.directory} was made by a different model or "
        f"optimizer. Mismatched arrays:\n" + "\n".join(problems[:20]) +
        (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "") +
        "\nUse a new --workdir, or the config that made this checkpoint.")


def restore(mngr, step, like, with_data=True):
  """Returns (state, data_state) saved at `step`, with the shapes, dtypes and shardings of `like`
  (a state, or its jax.ShapeDtypeStructs): restored straight into the current shardings."""
  abstract_state = jax.tree.map(ocp.tree.to_shape_dtype_struct, like)
  check_compatible(mngr, step, abstract_state)
  items = dict(state=ocp.args.StandardRestore(abstract_state))
  if with_data:
    items["data"] = ocp.args.JsonRestore()
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  return restored["state"], restored.get("data") if with_data else None


def _open_pretrained(path):
  """(read-only manager, step) for a workdir, its checkpoints/ folder or one step folder in it."""
  path = epath.Path(path).absolute()
  step = None
  if path.name.isdigit() and (path / "state").exists():
    path, step = path.parent, int(path.name)
  elif (path / "checkpoints").exists():
    path = path / "checkpoints"
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist. Give a training workdir or <workdir>/checkpoints/<step>.")
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  mngr = ocp.CheckpointManager(path, options=options, item_handlers={
      "state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})
  step = mngr.latest_step() if step is None else step
  if step is None or step not in mngr.all_steps():
    raise FileNotFoundError(f"No checkpoint in {path}: train first, or give a workdir that holds one.")
  return mngr, step


def read_weights(path, sharding):
  """(params, model_state, step) of the checkpoint at `path` (see _open_pretrained), as plain dicts."""
  mngr, step = _open_pretrained(path)
  meta = mngr.item_metadata(step)["state"]
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), meta)
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  mngr.close()
  return state["params"], state.get("model_state", {}), step


def load_pretrained(c, params, model_state, sharding):
  """Returns (params, model_state, message): arrays taken from checkpoint `c.checkpoint` by path.

  Arrays matching a `c.reinit` regex, or absent from the checkpoint, keep their fresh
  initialisation; any other shape mismatch is an error naming the parameter.
  """
  stored_params, stored_state, step = read_weights(c.checkpoint, sharding)
  stored = {name: x for tree in (stored_params, stored_state) for name, x in zip(*paths.flatten(tree)[:2])}
  fresh, problems, used = [], [], set()

  def merge(keypath, leaf):
    path = paths.keystr(keypath)
    if any(re.search(r, path) for r in c.reinit) or path not in stored:
      fresh.append(path)
      return leaf
    if stored[path].shape != leaf.shape:
      problems.append(f"  {path}: checkpoint has {tuple(stored[path].shape)}, this model {tuple(leaf.shape)}")
      return leaf
    used.add(path)
    return stored[path].astype(leaf.dtype)

  params = jax.tree_util.tree_map_with_path(merge, params)
  model_state = jax.tree_util.tree_map_with_path(merge, model_state)
  if problems:
    raise ValueError(f"init.checkpoint {c.checkpoint} (step {step}) does not fit this model:\n" +
                     "\n".join(problems) + "\nStart those parameters afresh by adding a regex that matches "
                     "them to init.reinit, or change the model config to match the checkpoint.")
  if not used:
    raise ValueError(f"init.checkpoint {c.checkpoint} (step {step}) shares no parameter path with this "
                     f"model: it was made by a different architecture. Checkpoint arrays: "
                     f"{', '.join(sorted(stored)[:8])}, ...")
  message = (f"Initialised {len(used)} arrays from {c.checkpoint} (step {step}); fresh: "
             f"{', '.join(fresh) or 'none'}; unused from the checkpoint: {len(set(stored) - used)}")
  return params, model_state, message
