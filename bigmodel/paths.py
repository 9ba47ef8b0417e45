"""Parameter paths as strings ("block0/attn/qkv/kernel"): how configs (freeze, reinit, pruning
scope), checkpoints, shardings and exports name the arrays of a pytree."""
import jax


def keystr(keypath) -> str:
  return jax.tree_util.keystr(keypath, simple=True, separator="/")


def flatten(tree):
  """(paths, leaves, treedef) of `tree`, the paths in leaf order."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return [keystr(p) for p, _ in flat], [x for _, x in flat], treedef
