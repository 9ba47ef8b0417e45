"""Several processes as one run: joining them, checking they agree, and stopping them together.

On a TPU pod or a GPU cluster the same command runs on every host and `jax.distributed`
joins them: the coordinator, the process count and each process's id come from the cluster
(Cloud TPU, SLURM, Open MPI), or from the variables `bigmodel.launch` sets on one machine.
After that the processes form one mesh over all their devices, and the trainer's code is the
same as for one process: each process feeds its own rows of every global batch (data/pipeline.py),
orbax writes each process's shards, and only process 0 writes the config and the logs.

A process that dies is noticed by JAX's coordination service (missed heartbeats), which stops
the others with a message naming it. SIGTERM on any process (a preemption notice) is passed to
all by JAX's preemption service; `stop_requested` turns true on every process at the same call.
"""
import hashlib
import json
import os
import signal

import jax
import numpy as np

from bigmodel import errors

# Set by bigmodel.launch (and usable by any scheduler without JAX's own cluster detection).
COORDINATOR, PROCESSES, PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "BIGMODEL_PROCESSES", "BIGMODEL_PROCESS_ID"


def wanted(config) -> bool:
  return bool(config.get("distributed")) or os.environ.get("BIGMODEL_DISTRIBUTED") == "1"


def initialize(heartbeat_timeout=30):
  """Joins this process to the others. Without BIGMODEL_PROCESSES, JAX detects the cluster itself.

  `heartbeat_timeout`: seconds after which a silent process counts as dead and the others stop
  (JAX's default, 100 s, is long for a crashed host holding a whole pod)."""
  # CPU devices of different processes reduce over TCP with gloo; GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  given = {}
  if PROCESSES in os.environ:
    given = dict(num_processes=int(os.environ[PROCESSES]), process_id=int(os.environ[PROCESS_ID]))
  jax.distributed.initialize(heartbeat_timeout_seconds=int(heartbeat_timeout), **given)


def check_same_config(config, workdir):
  """Stops every process, with the keys that differ, if the processes were started with different
  configs or workdirs: they would compile different programs and wait on each other for ever."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  text = json.dumps({**config.to_dict(), "workdir": str(workdir)}, sort_keys=True, default=str)
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
  digests = np.asarray(multihost_utils.process_allgather(digest))  # [processes, 32]
  differ = [i for i in range(len(digests)) if not np.array_equal(digests[i], digests[0])]
  if not differ:
    return
  # Every process learns process 0's config, so each can say what it got wrong.
  size = int(multihost_utils.broadcast_one_to_all(np.int32(len(text))))
  mine = np.frombuffer(text.encode()[:size].ljust(size, b"\0"), np.uint8)
  first = json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(mine))).decode())
  if jax.process_index() not in differ:
    raise errors.UserError(
        f"Process(es) {', '.join(map(str, differ))} of {jax.process_count()} started with a different config or "
        "workdir from process 0's (their messages name the keys). Start every process with the same command.")
  ours, first = _flat(json.loads(text)), _flat(first)
  keys = sorted(k for k in set(ours) | set(first) if ours.get(k) != first.get(k))
  raise errors.UserError(
      f"Process {jax.process_index()} started with a different config from process 0's: "
      + ", ".join(f"{k}={ours.get(k)!r} (process 0: {first.get(k)!r})" for k in keys[:10])
      + ". Start every process with the same command.")


def _flat(tree, prefix=""):
  """{"data.batch_size": 16, ...}: the keys as they are typed on the command line."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


class Preemption:
  """SIGTERM (a preemption notice) as a flag the training loop checks between calls.

  One process: a Python handler sets it. Several: JAX's preemption service has caught SIGTERM since
  `jax.distributed.initialize`, tells every process, and agrees on a call: `stop_requested(call)` is
  true on all of them at the same call, so they save the same step. `call` counts the loop's calls,
  which every process makes alike (steps per call vary, so step numbers would not do)."""

  def __enter__(self):
    self.requested = False
    self.shared = jax.process_count() > 1
    if not self.shared:
      self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def stop_requested(self, call):
    if self.shared:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(call)
    return self.requested

  def __exit__(self, *exc):
    if not self.shared:
      signal.signal(signal.SIGTERM, self.previous)
