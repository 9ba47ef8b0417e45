"""Multi-host training for real: processes on this machine joined by jax.distributed (gloo
collectives over 127.0.0.1), started by bigmodel.launch, against one process with the same
number of devices.

The one-process and two-process runs of every job happen once (the `runs` fixture, through
tests/multihost_worker.py), so jax starts and compiles once per process for all the checks.
"""
import io
import json
import os
import shlex
import shutil
import socket
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bigmodel import errors, launch, workdir as workdir_lib
from bigmodel.data import pipeline

from conftest import (ROOT, XLA_TEST_FLAGS, gpt_config, image_shares_config, resnet_config, tiny_config,
                      write_jpeg_folder)

pytestmark = pytest.mark.slow  # the whole module: the fast tier (-m 'not slow') leaves it out

PROCESSES, DEVICES = 2, 4  # 2 x 4 against 1 x 8: room for data x fsdp x tensor = 2 x 2 x 2
STEPS = 3
BIG = 20480  # the FSDP job's MLP width: a 64 x 20480 kernel is 5 MiB, above the size where gloo's
#              reduce-scatter was reported wrong (jax issue 40830)
# The real config file and CLI: the "gpt_data" job trains it uninterrupted, the fault tests through the CLI.
CLI_CONFIG = "configs/shakespeare/gpt_char.py"
CLI_SET = {"model.num_layers": 1, "model.dim": 32, "model.num_heads": 2, "data.seq_len": 16,
           "data.batch_size": 16, "data.eval_batch_size": 64, "data.eval_examples": 64,
           "optimizer.warmup_steps": 2, "total_steps": 40, "log_every": 5, "eval_every": 40,
           "checkpoint_every": 10, "heartbeat_timeout": 10}
SHORT = {"total_steps": STEPS, "log_every": 1, "eval_every": STEPS, "checkpoint_every": STEPS,
         "data.eval_examples": 64}
JOBS = {  # name -> (config, changes)
    "gpt_data": (CLI_CONFIG, {**CLI_SET, "sharding.data": 8}),
    # SGD: Adam's update hides a wrongly scaled gradient, and magnifies rounding in tiny ones.
    "gpt_fsdp": ("gpt", {**SHORT, "sharding.data": 1, "sharding.fsdp": 8, "model.dim": 64, "model.mlp_dim": BIG,
                         "optimizer.name": "sgd", "optimizer.learning_rate": 1.0}),
    "gpt_3d": ("gpt", {**SHORT, "sharding.data": 2, "sharding.fsdp": 2, "sharding.tensor": 2}),
    "resnet_bn": ("resnet", {**SHORT, "sharding.data": 8}),
}
TIMEOUT = 300  # seconds for a whole launch: a hang fails the test instead of CI


def worker(spec_path, processes, log):
  """Runs tests/multihost_worker.py on `processes` processes of DEVICES devices (1: no jax.distributed)."""
  command = [sys.executable, os.path.join(ROOT, "tests", "multihost_worker.py"), str(spec_path)]
  if processes == 1:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={PROCESSES * DEVICES} "
                                     f"{XLA_TEST_FLAGS}")
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return
  out = io.StringIO()
  status = launch.supervise(launch.start(command, processes, DEVICES, cwd=ROOT), out=out)
  log.write_text(out.getvalue())
  assert status == 0, out.getvalue()[-6000:]


@pytest.fixture(scope="module")
def runs(data_dir, corpus, tmp_path_factory):
  """Every job trained on 2 processes x 4 devices and on 1 process x 8 devices; then the FSDP run of the
  two processes continues for 3 steps in the one process, data parallel (a checkpoint changing layout)."""
  root = tmp_path_factory.mktemp("multihost")
  from configs.shakespeare import gpt_char
  images = write_jpeg_folder(str(root / "pets"), n_per_class=(40, 4), size=16)
  for c in (tiny_config(data_dir), gpt_config(data_dir, corpus), resnet_config(data_dir), gpt_char.get_config(),
            image_shares_config(data_dir, images)):
    c.data.data_dir = data_dir
    _dataset(c)  # prepared here once, not by two processes at the same time
  for name, processes in (("two", PROCESSES), ("one", 1)):
    spec = {"data_dir": data_dir, "corpus": corpus, "images": images, "heartbeat_timeout": 10,
            "shares": str(root / name) if processes > 1 else None,
            "jobs": [{"config": config, "set": changes, "workdir": str(root / name / job)}
                     for job, (config, changes) in JOBS.items()]}
    if name == "one":
      shutil.copytree(root / "two" / "gpt_fsdp", root / "moved")
      spec["jobs"].append({"config": "gpt", "workdir": str(root / "moved"), "set": {
          **JOBS["gpt_fsdp"][1], "total_steps": 2 * STEPS, "sharding.data": 8, "sharding.fsdp": 1}})
    (root / name).mkdir()
    (root / f"{name}.json").write_text(json.dumps(spec))
    worker(root / f"{name}.json", processes, root / f"{name}.log")
  return root


def _dataset(c):
  from bigmodel import config as config_lib, experiment
  return experiment.build(config_lib.resolve(c)).dataset


def logged(workdir, split):
  """{step: metrics} of the `split` rows of metrics.jsonl; fails if a step was logged twice (a second writer)."""
  out = {}
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    row = json.loads(line)
    if row["split"] == split:
      assert row["step"] not in out, f"{split} step {row['step']} logged twice in {workdir}"
      out[row["step"]] = row
  return out


def train_losses(workdir):
  return {step: row["loss"] for step, row in logged(workdir, "train").items()}


def eval_metrics(workdir):
  """The last evaluation's numbers."""
  rows = logged(workdir, "eval")
  return {k: v for k, v in rows[max(rows)].items() if k not in ("step", "split", "time")}


def final(workdir, step=None):
  """(params, model_state) of the newest checkpoint (or `step`), on this process's one device."""
  import jax
  path = os.path.join(workdir, "checkpoints", str(step)) if step else str(workdir)
  params, model_state, _ = workdir_lib.read_weights(path, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  return params, model_state


@pytest.mark.parametrize("job", list(JOBS))
def test_two_processes_give_the_losses_of_one(runs, job):
  two, one = runs / "two" / job, runs / "one" / job
  losses, reference = train_losses(two), train_losses(one)
  steps = sorted(reference)
  assert sorted(losses)[:len(steps)] == steps and len(set(reference.values())) == len(steps) > 1
  np.testing.assert_allclose([losses[s] for s in steps], [reference[s] for s in steps], rtol=2e-4)
  assert eval_metrics(two) and eval_metrics(two).keys() == eval_metrics(one).keys()
  for key, value in eval_metrics(one).items():
    np.testing.assert_allclose(eval_metrics(two)[key], value, rtol=2e-4, err_msg=key)
  # Only process 0 writes the logs and TensorBoard; every process writes its own shards of the state.
  assert len(os.listdir(two / "tensorboard")) == 1
  state_files = os.listdir(two / "checkpoints" / str(steps[-1]) / "state")
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(state_files), state_files


def test_a_fsdp_parameter_above_4_mib_and_batchnorm_statistics_agree(runs):
  """The parameters after 3 updates, each a reduce-scatter of its gradient across the processes."""
  (params_two, _), (params_one, _) = final(runs / "two" / "gpt_fsdp"), final(runs / "one" / "gpt_fsdp")
  kernel = params_two["block0"]["mlp_in"]["kernel"]
  assert kernel.size * kernel.dtype.itemsize > 4 * 2**20, kernel.shape
  np.testing.assert_allclose(kernel, params_one["block0"]["mlp_in"]["kernel"], rtol=1e-5, atol=1e-7)
  # The checkpoint of 8 devices on 2 processes evaluates on this process's one device, as it did there.
  from bigmodel import evaluate
  step, m = evaluate.evaluate_workdir(str(runs / "two" / "gpt_fsdp"))
  assert step == STEPS
  np.testing.assert_allclose(m["loss"], eval_metrics(runs / "two" / "gpt_fsdp")["loss"], rtol=2e-4)
  (_, stats_two), (_, stats_one) = final(runs / "two" / "resnet_bn"), final(runs / "one" / "resnet_bn")
  import jax
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), stats_two, stats_one)


def test_each_process_reads_only_its_share_of_every_batch(runs, data_dir, corpus):
  reads = [json.load(open(runs / "two" / f"process{i}.json")) for i in range(PROCESSES)]
  for kind, c in (("host", tiny_config(data_dir)), ("text", gpt_config(data_dir, corpus)),
                  ("images", image_shares_config(data_dir, str(runs / "pets"))), ("device", tiny_config(data_dir))):
    dataset = _dataset(c)
    split = dataset.splits["train"]
    order = pipeline.ShuffledBatches(len(split), c.data.batch_size, c.seed)
    shares = [pipeline.host_slice(c.data.batch_size, i, PROCESSES) for i in range(PROCESSES)]
    for b in range(3):
      whole = order[b]
      if kind == "device":
        sent = [np.array(r["device"]["sent"][b]) for r in reads]
      else:  # what reached the step is the data of those rows
        sent = [whole[share] for share in shares]
        for r, rows in zip(reads, sent):
          x = np.asarray(r[kind]["x"][b])
          expected = pipeline.preprocess(split.gather(rows))["x"]
          np.testing.assert_allclose(x, pipeline.normalize({"x": expected}, dataset.norm)["x"], rtol=1e-6)
      together = np.concatenate(sent)
      assert len(set(together.tolist())) == len(together) == c.data.batch_size  # no overlap, all rows
      np.testing.assert_array_equal(np.sort(together), np.sort(whole))
    if kind != "device":  # every gather a process made (prefetching included) was its own rows of a batch
      for i, r in enumerate(reads):
        own = {tuple(order[b][shares[i]].tolist()) for b in range(12)}
        assert r[kind]["reads"] and all(tuple(read) in own for read in r[kind]["reads"]), (kind, i)


def test_a_checkpoint_moves_from_two_processes_fsdp_to_one_process_data_parallel_to_one_device(runs, data_dir,
                                                                                               corpus, tmp_path):
  """3 steps on 2 x 4 devices (FSDP), 3 more on 1 x 8 (data parallel), 3 on this process's one device;
  each resume restores into the new shardings. The losses follow the uninterrupted one-device run's."""
  from bigmodel.train import train_and_evaluate
  moved = runs / "moved"
  c = gpt_config(data_dir, corpus, data=1, fsdp=1)
  for key, value in {**JOBS["gpt_fsdp"][1], "total_steps": 3 * STEPS, "sharding.fsdp": 1}.items():
    section, _, field = key.rpartition(".")
    (c[section] if section else c)[field] = value
  train_and_evaluate(c, str(moved))
  train_and_evaluate(c, str(tmp_path / "straight"))
  losses, straight = train_losses(moved), train_losses(tmp_path / "straight")
  assert sorted(losses) == sorted(straight) == list(range(1, 3 * STEPS + 1))
  np.testing.assert_allclose([losses[s] for s in sorted(losses)], [straight[s] for s in sorted(losses)], rtol=2e-4)


def cli(workdir, data_dir):
  return [sys.executable, "-m", "bigmodel.train", f"--config={CLI_CONFIG}", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *(f"--config.{k}={v}" for k, v in CLI_SET.items())]


class Output:
  """Collects a process's output lines on a thread (a full pipe would stall it)."""

  def __init__(self, proc):
    import threading
    self.lines = []
    self.thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    self.thread.start()

  def text(self):
    return "".join(self.lines)


def wait_for(condition, timeout, what):
  end = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < end, f"timed out waiting for {what}"
    time.sleep(0.05)


def test_a_killed_process_stops_the_others_ctrl_c_and_sigterm_stop_all_at_one_step_and_the_end_equals_uninterrupted(
    runs, data_dir, tmp_path):
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "bigmodel.launch", f"--processes={PROCESSES}", f"--devices_per_process={DEVICES}",
             "--", *cli(workdir, data_dir)]
  # 1. SIGKILL process 1 once step 10 is saved: process 0 stops by itself (the launcher would wait 60 s
  #    before killing it) and the launcher names the lost process.
  proc = subprocess.Popen([*command[:3], "--grace=60", *command[3:]], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  out = Output(proc)
  try:
    wait_for(lambda: (workdir / "checkpoints" / "10" / "commit_success.txt").exists() or proc.poll() is not None,
             TIMEOUT, "the checkpoint of step 10")
    assert proc.poll() is None, out.text()[-3000:]
    pids = next(line for line in out.lines if line.startswith("launch: ")).split("pids ")[1].split(", ")
    os.kill(int(pids[1]), signal.SIGKILL)
    killed = time.monotonic()
    proc.wait(timeout=90)
    stopped_after = time.monotonic() - killed
  finally:
    proc.kill()
  out.thread.join(5)
  assert proc.returncode == 128 + signal.SIGKILL and stopped_after < 60, (stopped_after, out.text()[-3000:])
  assert out.lines[-1] == "launch: process 1 ended (killed by SIGKILL).\n", out.text()[-3000:]
  # 2. Relaunch, then Ctrl-C as a terminal sends it (SIGINT to the whole process group): both save the same
  #    step and the launcher exits 0. 3. Relaunch, then SIGTERM the launcher only, as a scheduler preempting
  #    it does: both save the same step and the launcher exits 75, "stopped, resumable".
  step = 10
  for how, status in (("ctrl-c", 0), ("sigterm", errors.RESUMABLE)):
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = Output(proc)
    try:
      wait_for(lambda: f"Resumed from step {step}" in out.text() or proc.poll() is not None, TIMEOUT, "the resume")
      if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
      else:
        proc.send_signal(signal.SIGTERM)
      proc.wait(timeout=TIMEOUT)
    finally:
      proc.kill()
    out.thread.join(5)
    said = [line for line in out.lines if "SIGTERM: saved a checkpoint" in line]
    saved = {int(line.split("at step ")[1].split()[0]) for line in said}
    assert proc.returncode == status and len(said) == PROCESSES and len(saved) == 1, (how, out.text()[-4000:])
    previous, step = step, saved.pop()
    assert previous < step < 40 and (workdir / "checkpoints" / str(step) / "commit_success.txt").exists(), how
  # 4. Relaunch to the end: bit-identical to the uninterrupted run.
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == 0 and f"Resumed from step {step}" in proc.stdout, proc.stdout[-4000:]
  import jax
  jax.tree.map(np.testing.assert_array_equal, final(workdir), final(runs / "two" / "gpt_data"))


def descendants(pid):
  """The ids of the processes below `pid` (children, theirs, ...), read from /proc."""
  parents = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        stat = open(f"/proc/{entry}/stat").read()
      except OSError:
        continue
      parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
  below, todo = [], [pid]
  while todo:
    children = parents.get(todo.pop(), [])
    below += children
    todo += children
  return below


def alive(pid):
  """Running: neither gone nor a zombie (one nobody reaps still has an id)."""
  try:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the processes through /proc")
def test_the_processes_die_with_a_sigkilled_launcher_and_the_rerun_ends_bit_identical(runs, data_dir, tmp_path):
  """kill -9 (or the OOM killer) on bigmodel.launch: its processes, each in its own session, must not go on
  training and holding the workdir. Started directly (Linux's parent-death signal), then behind a shell that
  does not exec them (bigmodel.distributed's watch on the launcher); each time none is left 5 s later."""
  workdir = tmp_path / "run"
  launcher = [sys.executable, "-m", "bigmodel.launch", f"--processes={PROCESSES}", f"--devices_per_process={DEVICES}",
              "--"]
  train = cli(workdir, data_dir)
  wrapped = ["sh", "-c", f"{shlex.join(train)}; exit $?"]  # the shell waits for python instead of becoming it
  saved = lambda step: (workdir / "checkpoints" / str(step) / "commit_success.txt").exists()  # noqa: E731
  for command, ready in ((train, lambda out: saved(10)), (wrapped, lambda out: "Resumed from step" in out.text())):
    proc = subprocess.Popen(launcher + command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    try:
      wait_for(lambda: ready(out) or proc.poll() is not None, TIMEOUT, "training to start")
      assert proc.poll() is None, out.text()[-3000:]
      workers = [pid for pid in descendants(proc.pid) if alive(pid)]
      assert len(workers) >= PROCESSES, workers
      proc.kill()
      proc.wait()
      end = time.monotonic() + 5
      while any(map(alive, workers)) and time.monotonic() < end:
        time.sleep(0.05)
      left = [pid for pid in workers if alive(pid)]
    finally:
      proc.kill()
      for pid in descendants(proc.pid) + workers:  # the old behaviour's survivors: stop them
        if alive(pid):
          os.kill(pid, signal.SIGKILL)
    assert not left, (command[0], left, out.text()[-3000:])
  # The rerun is not refused (no process holds the workdir) and ends as the uninterrupted run did.
  proc = subprocess.run(launcher + train, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == 0 and "Resumed from step " in proc.stdout, proc.stdout[-4000:]
  import jax
  jax.tree.map(np.testing.assert_array_equal, final(workdir), final(runs / "two" / "gpt_data"))


def test_a_process_started_with_another_config_fails_at_start_on_every_process(data_dir, tmp_path):
  train = " ".join(cli(tmp_path / "run", data_dir))
  command = ["sh", "-c", f'if [ "$BIGMODEL_PROCESS_ID" = 1 ]; then extra=--config.data.batch_size=32; fi; '
                         f"exec {train} $extra"]
  out = io.StringIO()
  status = launch.supervise(launch.start(command, PROCESSES, 1, cwd=ROOT), out=out)
  text = out.getvalue()
  assert status == 2, text[-3000:]
  assert "[1] error: Process 1 started with a different config from process 0's: data.batch_size=32 " \
         "(process 0: 16)" in text, text[-3000:]
  assert "[0] error: Process(es) 1 of 2 started with a different config or workdir" in text, text[-3000:]


SLURM_PROBE = """
import json, jax, numpy as np
from jax._src import xla_bridge
from jax.experimental import multihost_utils
from bigmodel import distributed
distributed.initialize(10)
ids = np.asarray(multihost_utils.process_allgather(np.int32(jax.process_index()))).tolist()
print(json.dumps({"count": jax.process_count(), "ids": ids, "gpus": xla_bridge.CUDA_VISIBLE_DEVICES.value}))
"""


def slurm_job_id():
  """A job id whose coordinator port (JAX: 61440 + id % 4096) is free here."""
  for port in np.random.default_rng().permutation(np.arange(61440, 65536))[:100]:
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", int(port)))
      except OSError:
        continue
    return 4096 * 250 + int(port) - 61440
  raise AssertionError("no free port in 61440-65535")


@pytest.mark.parametrize("layout, nodes, extra, gpus", [
    ("one task per node", 2, {}, ["all", "all"]),  # srun --nodes=2 --ntasks-per-node=1 --gpus-per-node=N
    ("one task per GPU", 1, {}, ["0", "1"]),  # srun --nodes=1 --ntasks-per-node=2 --gpus-per-node=2
    ("--gpus-per-task", 1, {"SLURM_GPUS_PER_TASK": "1"}, ["all", "all"]),  # each task sees its own GPU alone
])
def test_slurm_variables_alone_join_the_processes_and_each_takes_the_gpus_docs_scale_md_says(
    layout, nodes, extra, gpus):
  """Two processes started as srun starts them (SLURM's variables, no launcher, no JAX_COORDINATOR_ADDRESS)
  join as one run; each process restricts CUDA to the GPUs docs/scale.md says (all it sees, or SLURM_LOCALID)."""
  job = slurm_job_id()
  procs = []
  for i in range(2):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORDINATOR", "BIGMODEL_"))}
    node = i if nodes == 2 else 0
    env.update({"JAX_PLATFORMS": "cpu", "SLURM_JOB_ID": str(job), "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2",
                "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i - node), "SLURM_NODEID": str(node),
                "SLURM_STEP_NODELIST": "localhost", "SLURM_NODELIST": "localhost", "SLURM_JOB_NODELIST": "localhost",
                "SLURM_STEP_NUM_NODES": str(nodes), "SLURM_NNODES": str(nodes), "SLURM_STEP_NUM_TASKS": "2",
                "SLURM_STEP_TASKS_PER_NODE": "1(x2)" if nodes == 2 else "2", **extra})
    procs.append(subprocess.Popen([sys.executable, "-c", SLURM_PROBE], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  results = []
  for p in procs:
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr[-3000:]
    results.append(json.loads(stdout.strip().splitlines()[-1]))
  assert [r["count"] for r in results] == [2, 2] and [r["ids"] for r in results] == [[0, 1], [0, 1]], results
  assert [r["gpus"] for r in results] == gpus, (layout, results)
