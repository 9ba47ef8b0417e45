"""Device mesh, parameter shardings and batch placement.

The mesh has three axes, sized by the config's `sharding` block (-1 = the devices left over):
  data    data parallelism: the batch is split, parameters are replicated;
  fsdp    the batch is split too, and parameters and optimizer state are sharded (FSDP / ZeRO-3);
          XLA gathers each weight where it is used and reduce-scatters its gradient;
  tensor  tensor parallelism (Megatron): attention heads and MLP columns are split.
Parameters name their axes with `nn.with_logical_partitioning` ("embed", "heads", "mlp",
"vocab"; see models/gpt.py) and `sharding.rules` maps those names to mesh axes. A parameter
whose names leave `fsdp` unused (every unnamed one: CNNs, ResNets, RNNs) is sharded over
`fsdp` along its largest dimension that divides evenly. A dimension that does not divide by
its mesh axis stays whole, so any model runs under any mesh. The layer axis of scanned blocks
(`model.scan_layers`) is never split.
"""
import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from bigmodel import errors, paths, registry
from bigmodel.registry import Key
from bigmodel.models import stack

AXES = ("data", "fsdp", "tensor")
_SIZE = registry.at_least(1, also=(-1,))
KEYS = dict(
    data=Key(-1, "mesh axis size: devices each batch is split over; -1 = all devices not taken by the other axes",
             _SIZE),
    fsdp=Key(1, "devices the batch, parameters and optimizer state are split over", _SIZE),
    tensor=Key(1, "devices attention heads and MLP columns are split over", _SIZE),
    rules=Key((("embed", "fsdp"), ("heads", "tensor"), ("kv_heads", "tensor"), ("mlp", "tensor"), ("vocab", "tensor")),
              "logical parameter axis -> mesh axis (MaxText's pattern); unlisted names stay whole. kv_heads: "
              "grouped-query attention's key/value heads (models/llama.py), split while whole heads divide"),
)
DEFAULTS = registry.defaults(KEYS)


def axis_sizes(c, num_devices):
  sizes = [c[a] for a in AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise errors.UserError(f"sharding axis sizes {dict(zip(AXES, sizes))}: each must be positive or -1 (the rest), "
                           "and at most one -1.")
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if num_devices % fixed or (-1 not in sizes and fixed != num_devices):
    raise errors.UserError(f"sharding axis sizes {dict(zip(AXES, sizes))} do not fit {num_devices} devices: their "
                           "product must equal the device count (use -1 for one axis to take the rest).")
  return tuple(num_devices // fixed if s == -1 else s for s in sizes)


def make_mesh(c=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over every visible device (all hosts); all data-parallel by default."""
  sizes = axis_sizes(c or DEFAULTS, jax.device_count())
  return jax.make_mesh(sizes, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def traced_on(fn, mesh):
  """`fn` tracing with `mesh` set (as an abstract mesh, which jit allows inside): the models' activation
  constraints (models/stack.py, batch_split) read it. Jit the result."""
  def traced(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args, **kwargs)
  return traced


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh):
  """The batch dimension is split over every axis that is data-parallel: data and fsdp."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def batch_devices(mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def _mesh_axes(entry):
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def check_processes_split_batch(mesh):
  """Each process feeds its own rows of every batch (data/pipeline.py:host_slice), so its devices must
  hold 1/N of the rows: the data-parallel axes have to span the processes."""
  n, held = jax.process_count(), batch_sharded(mesh).addressable_devices_indices_map((batch_devices(mesh),))
  if n > 1 and len({index[0].start for index in held.values()}) * n != batch_devices(mesh):
    raise errors.UserError(
        f"The mesh {dict(mesh.shape)} does not split the batch over the {n} processes: each must hold its own "
        "rows. Keep the tensor axis within a process (sharding.tensor <= devices per host).")


def param_sharding(shape, logical, mesh, rules):
  """NamedSharding for one parameter of `shape` whose axes are named `logical` (a PartitionSpec)."""
  axes = list(nn.logical_to_mesh_axes(tuple(logical), rules) or ())
  axes += [None] * (len(shape) - len(axes))
  for i, entry in enumerate(axes):
    kept = tuple(a for a in _mesh_axes(entry) if mesh.shape[a] > 1)  # a size-1 axis leaves the dim free
    size = int(np.prod([mesh.shape[a] for a in kept]))
    axes[i] = None if not kept or shape[i] % size else kept[0] if len(kept) == 1 else kept  # else: stays whole
  used = {a for entry in axes for a in _mesh_axes(entry)}
  n = mesh.shape["fsdp"]
  if n > 1 and "fsdp" not in used:
    free = [i for i in np.argsort(shape)[::-1] if axes[i] is None and shape[i] % n == 0]
    if free:
      axes[free[0]] = "fsdp"
  return NamedSharding(mesh, P(*axes))


def param_shardings(abstract_params, logical_params, mesh, rules):
  """The params tree of NamedShardings; `logical_params` from `nn.get_partition_spec` (P() = unnamed).
  Scanned blocks (models/stack.py) keep their leading layer axis whole: each layer's slice is sharded
  as the unscanned block's parameter would be."""
  def one(keypath, x, spec):
    if not stack.is_stacked(paths.keystr(keypath)):
      return param_sharding(x.shape, spec, mesh, rules)
    layer = param_sharding(x.shape[1:], tuple(spec)[1:], mesh, rules)  # spec[0]: the layer axis, if named
    return NamedSharding(mesh, P(None, *layer.spec))
  return jax.tree_util.tree_map_with_path(one, abstract_params, logical_params, is_leaf=lambda x: isinstance(x, P))


def mirror_params(abstract_tree, params_shardings, mesh):
  """Shardings for a tree (the train state) holding the params and per-parameter copies of them
  (optimizer moments, pruning masks): a leaf whose path ends with a parameter's path and has its
  shape is sharded like that parameter; anything else (step, rng, statistics) is replicated."""
  names, leaves, _ = paths.flatten(abstract_tree.params)
  params = {name: (tuple(x.shape), sh) for name, x, sh in zip(names, leaves, jax.tree.leaves(params_shardings))}

  def pick(keypath, leaf):
    path = paths.keystr(keypath)
    for name, (shape, sh) in params.items():
      if (path == name or path.endswith("/" + name)) and tuple(leaf.shape) == shape:
        return sh
    return replicated(mesh)
  return jax.tree_util.tree_map_with_path(pick, abstract_tree)


def bytes_per_device(tree, shardings):
  """Bytes one device holds of `tree` (abstract arrays) under `shardings`: the largest shard per leaf."""
  return sum(int(np.prod(sh.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
             for x, sh in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))


def put_batch(batch, mesh):
  """Places this host's slice of a batch as one global array split over the data-parallel axes."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)

