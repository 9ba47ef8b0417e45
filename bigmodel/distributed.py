"""Several processes as one run: joining them, checking they agree, and stopping them together.

On a TPU pod or a GPU cluster the same command runs on every host and `jax.distributed`
joins them: the coordinator, the process count and each process's id come from the cluster
(Cloud TPU, SLURM, Open MPI), or from the variables `bigmodel.launch` sets on one machine.
After that the processes form one mesh over all their devices, and the trainer's code is the
same as for one process: each process feeds its own rows of every global batch (data/pipeline.py),
orbax writes each process's shards, and only process 0 writes the config and the logs.

Under SLURM, `initialize` gives each process the GPUs docs/scale.md promises: JAX's own detection
gives a process GPU SLURM_LOCALID alone, right for one task per GPU, wrong for one task per node
(it would use GPU 0 of each node) and for `--gpus-per-task` (the task sees only its own GPUs).

A process that dies is noticed by JAX's coordination service (missed heartbeats), which stops
the others with a message naming it. SIGTERM on any process (a preemption notice) is passed to
all by JAX's preemption service; `stop_requested` turns true on every process at the same call.
"""
import hashlib
import json
import os
import signal
import threading
import time

import jax
from jax._src.clusters import SlurmCluster  # JAX's own reading of SLURM's variables (jax is pinned)
import numpy as np

from bigmodel import errors

# Set by bigmodel.launch (and usable by any scheduler without JAX's own cluster detection).
COORDINATOR, PROCESSES, PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "BIGMODEL_PROCESSES", "BIGMODEL_PROCESS_ID"
LAUNCHER = "BIGMODEL_LAUNCHER_PID"  # set by bigmodel.launch: its process id, which its processes must not outlive


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
  elif SlurmCluster.is_env_present() and slurm_task_takes_all_its_gpus():
    # JAX's detection would pick GPU SLURM_LOCALID alone: the same values, without that choice.
    address = os.environ.get(COORDINATOR) or SlurmCluster.get_coordinator_address(
        None, os.environ.get("JAX_COORDINATOR_PORT"))
    given = dict(coordinator_address=address, num_processes=SlurmCluster.get_process_count(),
                 process_id=SlurmCluster.get_process_id(), cluster_detection_method="deactivate")
  jax.distributed.initialize(heartbeat_timeout_seconds=int(heartbeat_timeout), **given)
  watch_launcher()


def slurm_task_takes_all_its_gpus():
  """Whether a SLURM task uses every GPU it sees: when it is its node's only task (`--ntasks-per-node=1`:
  as many tasks as nodes, since every node of a step runs one at least), or SLURM gave each task its own
  GPUs (`--gpus-per-task`: the task sees only those). Otherwise several tasks share the node's GPUs and
  each takes GPU SLURM_LOCALID, JAX's rule (`--ntasks-per-node` = GPUs per node)."""
  nodes = os.environ.get("SLURM_STEP_NUM_NODES") or os.environ.get("SLURM_NNODES")
  one_per_node = nodes is not None and int(nodes) == SlurmCluster.get_process_count()
  return one_per_node or "SLURM_GPUS_PER_TASK" in os.environ


def watch_launcher(every=0.5):
  """Under bigmodel.launch, ends this process (SIGKILL) within `every` seconds of the launcher's end, however
  that came (kill -9, the OOM killer): each process has its own session, so nothing else would stop it, and
  it would go on holding the workdir. On Linux the launcher's parent-death signal already kills the process
  it started; this covers other platforms, and a process behind a shell that did not `exec` it."""
  if LAUNCHER not in os.environ:
    return
  launcher, parent = int(os.environ[LAUNCHER]), os.getppid()

  def watch():
    while True:
      time.sleep(every)
      if os.getppid() != parent or not _running(launcher):  # a parent that ends hands its children on
        os.kill(os.getpid(), signal.SIGKILL)

  threading.Thread(target=watch, name="launcher watch", daemon=True).start()


def _running(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's: the launcher ran the command as someone else
    pass
  return True


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
