"""Parameter paths as strings ("block0/attn/qkv/kernel"): how configs (freeze, reinit, pruning
scope), checkpoints, shardings and exports name the arrays of a pytree."""
import jax


def keystr(keypath) -> str:
  return jax.tree_util.keystr(keypath, simple=True, separator="/")


def flatten(tree):
  """(paths, leaves, treedef) of `tree`, the paths in leaf order."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return [keystr(p) for p, _ in flat], [x for _, x in flat], treedef


def listed(names, most=6):
  """`names` for a message: the first `most`, then how many more (a LoRA run has two factors per kernel)."""
  names = list(names)
  if not names:
    return "none"
  more = len(names) - most
  return ", ".join(names[:most]) + (f" and {more:,} more" if more > 0 else "")
