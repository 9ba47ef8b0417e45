"""A model's stack of identical blocks, and the two parameter layouts it can have.

`blocks` runs `num_layers` blocks from the calling module. Unscanned (the default), they are a
Python loop and their parameters are `block0/...`, `block1/...`: XLA compiles every block.
Scanned (`model.scan_layers=true`), they are one `nn.scan` and their parameters one subtree,
`block_stack/...`, whose arrays have a leading layer axis: XLA compiles one block, whatever the
depth. Either way `model.remat` recomputes each block's activations in the backward pass
("full"), or all but its matmuls' outputs ("dots"), instead of keeping them ("none").

Each block's input is kept split along its batch over the mesh's data-parallel axes (`batch_split`)
while the trainer traces (sharding.traced_on): left to XLA's propagation, the residual stream took
the FSDP sharding of the token embedding's width, and every device computed the whole global batch's
activations and logits: 35 MB of temporaries per device on 64 devices for a 4 MB model, 2 TB for
Llama-3-8B on 256 (benchmarks/fits.py).

Checkpoints, Hugging Face imports and exports convert between the two layouts by path
(`relayout`): `<name>0 ... <name>N-1` stacked along a new leading axis is `<name>_stack`. The
layer axis is never sharded (bigmodel/sharding.py); each layer's slice is sharded as it would be
unscanned.
"""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from bigmodel import errors, platform

STACK = "_stack"  # <name>_stack holds blocks <name>0, <name>1, ... along its arrays' first axis
LAYER_AXIS = "layers"  # the logical name of that axis (no sharding rule maps it: it stays whole)
# jax.checkpoint policies; "dots" keeps the CPU dense layers' matmuls too (named: platform.dense_dot_general)
REMAT = {"full": None, "dots": jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    jax.checkpoint_policies.save_only_these_names(platform.DENSE_MATMUL))}
REMAT_NAMES = ("none", *REMAT)


def blocks(block, fields, num_layers, name, *, scan=False, remat="none"):
  """The function (x, *args) -> x that runs `num_layers` blocks `block(**fields)` in turn, each called
  as block(x, *args) -> x; call it inside a compact method, whose submodules the blocks become.
  Python bools among the args (train, decode) are static: they choose code, not values."""
  remat = {False: "none", True: "full"}.get(remat, remat)  # configs written when model.remat was a bool
  if remat not in REMAT_NAMES:
    raise errors.UserError(f"Unknown model.remat={remat!r}. Known: {', '.join(REMAT_NAMES)}.")

  def run(x, *args):
    with platform.plain_dense(remat != "none"):  # remat saves memory with lax's matmuls only (platform.py)
      return _run(x, *args)

  def _run(x, *args):
    static = tuple(i for i, a in enumerate(args, start=2) if isinstance(a, bool))  # 0 is self, 1 is x
    if not scan:
      cls = block if remat == "none" else nn.remat(block, policy=REMAT[remat], static_argnums=static)
      for i in range(num_layers):
        x = cls(**fields, name=f"{name}{i}")(batch_split(x), *args)
      return batch_split(x)
    body = _carrying(block)
    if remat != "none":  # inside a scan, common-subexpression elimination cannot undo the remat
      body = nn.remat(body, policy=REMAT[remat], prevent_cse=False, static_argnums=static)
    # Each layer has its own weights, dropout draws and KV cache; the other arguments are the same for all.
    scanned = nn.scan(body, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast,) * len(args), length=num_layers,
                      metadata_params={nn.PARTITION_NAME: LAYER_AXIS})
    return batch_split(scanned(**fields, name=name + STACK)(x, *args)[0])
  return run


def batch_split(x):
  """`x` constrained to have its first (batch) axis split over the data-parallel mesh axes, data and
  fsdp, when a mesh is set while tracing (the trainer's steps: sharding.traced_on) and the batch
  divides; `x` as it is otherwise (one device, generation, export)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not {"data", "fsdp"} <= set(mesh.axis_names):
    return x
  if x.shape[0] % (mesh.shape["data"] * mesh.shape["fsdp"]):
    return x
  return jax.lax.with_sharding_constraint(x, P(("data", "fsdp")))


def _carrying(block):
  """`block` as nn.scan's body: its input is the carry, its output the next carry (and nothing stacked)."""
  class Carrying(block):
    def __call__(self, x, *args):
      return super().__call__(batch_split(x), *args), None
  Carrying.__name__ = block.__name__
  return Carrying


# ---- The two layouts ----

_INDEXED = re.compile(r"^(.*\D)(\d+)$")  # block12 -> (block, 12)


def is_stacked(path) -> bool:
  """Whether the array at `path` ("params/block_stack/attn/qkv/kernel") has a leading layer axis."""
  return any(part.endswith(STACK) for part in path.split("/"))


def relayout(arrays, like):
  """{path: array} rearranged into the layout of `like` (paths; its values are not read): a stack
  `<name>_stack` is split into `<name>0, <name>1, ...` where `like` has no such stack, and blocks
  `<name>i` are stacked where `like` has one. Arrays may be jax or numpy arrays, or
  jax.ShapeDtypeStructs (their shardings follow: the layer axis unsharded). Every array lands
  somewhere, so a caller comparing the result with `like` sees what does not fit."""
  stacks = {_stack_of(path) for path in like if is_stacked(path)}
  out, groups = {}, {}
  for path, x in arrays.items():
    if is_stacked(path) and _stack_of(path) not in stacks:
      out.update({layer_path(path, i): _take(x, i) for i in range(x.shape[0])})
    elif not is_stacked(path) and (target := _stacked(path, stacks)):
      groups.setdefault(target[0], {})[target[1]] = x
    else:
      out[path] = x
  for path, layers in groups.items():
    if sorted(layers) == list(range(len(layers))):
      out[path] = _stack([layers[i] for i in range(len(layers))])
    else:  # a gap in the numbering: left as they are, for the caller to report
      out.update({layer_path(path, i): x for i, x in layers.items()})
  return out


def _stack_of(path):
  """The subtree holding a stacked array: "opt_state/0/mu/block_stack" for ".../block_stack/attn/qkv/kernel"."""
  parts = path.split("/")
  return "/".join(parts[:next(j for j, part in enumerate(parts) if part.endswith(STACK)) + 1])


def _stacked(path, stacks):
  """(the stacked path, the layer) of `path` ("params/block3/mlp_in/bias") in one of `stacks`, or None."""
  parts = path.split("/")
  for j, part in enumerate(parts):
    if (m := _INDEXED.match(part)) and "/".join([*parts[:j], m[1] + STACK]) in stacks:
      return "/".join([*parts[:j], m[1] + STACK, *parts[j + 1:]]), int(m[2])
  return None


def layer_path(path, i):
  """The path of layer `i`'s slice of the stacked array at `path` in the unscanned layout: "block3/attn/qkv/kernel"
  for "block_stack/attn/qkv/kernel"."""
  return "/".join(part[:-len(STACK)] + str(i) if part.endswith(STACK) else part for part in path.split("/"))


def _take(x, i):
  if isinstance(x, jax.ShapeDtypeStruct):
    sharding = x.sharding
    if isinstance(sharding, NamedSharding):
      sharding = NamedSharding(sharding.mesh, P(*tuple(sharding.spec)[1:]))
    return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=sharding)
  return x[i]


def _stack(xs):
  x = xs[0]
  if isinstance(x, jax.ShapeDtypeStruct):
    sharding = x.sharding
    if isinstance(sharding, NamedSharding):
      sharding = NamedSharding(sharding.mesh, P(None, *sharding.spec))
    return jax.ShapeDtypeStruct((len(xs), *x.shape), x.dtype, sharding=sharding)
  return np.stack(xs) if isinstance(x, np.ndarray) else jnp.stack(xs)  # numpy stays on the host
