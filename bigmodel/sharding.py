"""Device mesh and data placement: batch sharded over `data`, parameters replicated."""
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  """A 1-D `data` mesh over every visible device (all hosts)."""
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh):
  return NamedSharding(mesh, P("data"))


def put_batch(batch, mesh):
  """Places this host's slice of a batch as one global array sharded over `data`."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def must_block_each_step(mesh) -> bool:
  # XLA's CPU collectives deadlock when many multi-device steps are in flight.
  return mesh.devices.size > 1 and jax.default_backend() == "cpu"
