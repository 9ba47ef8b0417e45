"""Checkpoints: a thin layer over orbax's CheckpointManager.

A checkpoint holds two items: `state` (the TrainState pytree) and `data` (the
input iterator's position, as JSON). Orbax writes each step into a temporary
directory and renames it when complete, so a killed run never leaves a partial
checkpoint behind, and keeps the newest `keep` steps.
"""
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


def manager(workdir, keep):
  return ocp.CheckpointManager(
      epath.Path(workdir).absolute() / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True),
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})


def save(mngr, step, state, data_state):
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)


def _shapes(tree):
  """{'params/conv0/kernel': (5, 1, 25), ...} for every array leaf."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
          for path, leaf in flat if hasattr(leaf, "shape")}


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


def restore(mngr, step, abstract_state, with_data=True):
  """Returns (state, data_state) saved at `step`, placed like `abstract_state`."""
  check_compatible(mngr, step, abstract_state)
  items = dict(state=ocp.args.StandardRestore(abstract_state))
  if with_data:
    items["data"] = ocp.args.JsonRestore()
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  return restored["state"], restored.get("data") if with_data else None


def abstract(tree):
  """Shape, dtype and sharding of each array: what orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=x.sharding), tree)
