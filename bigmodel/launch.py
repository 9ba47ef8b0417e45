"""Several processes on this machine, joined as one multi-host run: a harness for trying and testing it.

    python -m bigmodel.launch --processes=2 --devices_per_process=2 -- \\
        python -m bigmodel.train --config=configs/shakespeare/gpt_char.py --workdir=runs/mp

starts the command N times, each process with K simulated CPU devices and the variables that
`bigmodel.distributed.initialize` reads (a free port on 127.0.0.1 for the coordinator). Their
output is streamed line by line behind `[i]`. The first process to fail stops the rest (SIGKILL,
after --grace seconds: they would only wait on it) and its status is this command's; SIGTERM and Ctrl-C are passed to
every process (as SIGTERM), which then save a checkpoint at the same step (a rehearsed preemption); this
command then exits with status 75 (errors.RESUMABLE) after a SIGTERM, 0 after Ctrl-C. If this command is
itself killed (kill -9, the OOM killer), the processes die with it (SIGKILL: a parent-death signal on Linux,
and bigmodel.distributed's watch on it), and the rerun resumes from the last checkpoint.
This is not a scheduler: on a cluster, SLURM or the TPU runtime starts the processes (docs/scale.md).
"""
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

from bigmodel import distributed, errors

flags.DEFINE_integer("processes", 2, "Processes to start.", lower_bound=1)
flags.DEFINE_integer("devices_per_process", 1, "Simulated CPU devices in each process.", lower_bound=1)
flags.DEFINE_integer("grace", 5, "Seconds the others get to stop by themselves after one fails, before SIGKILL.",
                     lower_bound=0)
flags.DEFINE_integer("collective_timeout", 120, "Seconds a CPU collective may wait for the others before it fails.",
                     lower_bound=1)


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(i, processes, devices, port, collective_timeout=120, base=None):
  """The environment of process i of `processes`, each with `devices` CPU devices."""
  env = dict(os.environ if base is None else base)
  # Any device count or collective timeout already in XLA_FLAGS is replaced, the rest kept.
  kept = re.sub(r"--xla_force_host_platform_device_count=\S+|--xla_cpu_collective_call_terminate_timeout_seconds=\S+",
                "", env.get("XLA_FLAGS", ""))
  env.update({
      "XLA_FLAGS": f"{kept.strip()} --xla_force_host_platform_device_count={devices} "
                   f"--xla_cpu_collective_call_terminate_timeout_seconds={collective_timeout}".strip(),
      "JAX_PLATFORMS": "cpu",
      "BIGMODEL_DISTRIBUTED": "1",
      distributed.COORDINATOR: f"127.0.0.1:{port}",
      distributed.PROCESSES: str(processes),
      distributed.PROCESS_ID: str(i),
      distributed.LAUNCHER: str(os.getpid()),
      "PYTHONUNBUFFERED": "1",  # lines arrive as they are printed, in order with the other processes'
  })
  return env


def start(command, processes, devices, collective_timeout=120, env=None, death_signal=False, **popen):
  """The N processes of `command`, started; their output is piped (merged stdout and stderr).

  They die with this process, however it ends: bigmodel.distributed watches it from each process, and
  with `death_signal` (Linux) the kernel SIGKILLs them as soon as this thread ends. That one runs Python
  between fork and exec, which can deadlock a process that has other threads (JAX's): the command line
  asks for it, before any; a caller inside a JAX program relies on the watch."""
  port = free_port()
  # Their own session: Ctrl-C at a terminal signals the whole foreground group, and a process that took
  # SIGINT itself would die mid-step (KeyboardInterrupt); the launcher passes it on as SIGTERM instead.
  # That also shields them from a lost terminal: they must be told to die with the launcher.
  preexec = _dies_with_this_thread() if death_signal else None
  return [subprocess.Popen(command, env=process_env(i, processes, devices, port, collective_timeout, env),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                           start_new_session=True, preexec_fn=preexec, **popen)
          for i in range(processes)]


PR_SET_DEATHSIG = 1  # linux/prctl.h


def _dies_with_this_thread():
  """A preexec_fn that has the kernel SIGKILL the child when the thread starting it ends (the launcher's
  main thread: the launcher), however it ends; None off Linux (bigmodel.distributed watches the launcher)."""
  if not sys.platform.startswith("linux"):
    return None
  prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
  parent = os.getpid()

  def preexec():
    prctl(PR_SET_DEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the launcher ended before the prctl: the signal will never come
      os._exit(1)
  return preexec


def _stream(i, proc, out):
  for line in proc.stdout:
    out.write(f"[{i}] {line}")
    out.flush()


def describe(status):
  return f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"


def supervise(procs, out=sys.stdout, grace=5):
  """Streams the processes' output until all have ended; returns the first failing status
  (128 + N for signal N), after killing the others still running `grace` seconds later; else
  errors.RESUMABLE when they stopped short of the end on a SIGTERM to this process, or 0 (finished,
  or stopped by Ctrl-C)."""
  streams = [threading.Thread(target=_stream, args=(i, p, out), daemon=True) for i, p in enumerate(procs)]
  for t in streams:
    t.start()
  received = []

  def forward(signum, frame):
    received.append(signum)
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  ended = (0, errors.RESUMABLE)  # finished, or stopped by SIGTERM after saving: not failures
  try:
    while True:
      failed = next((i for i, p in enumerate(procs) if p.poll() not in (None, *ended)), None)
      if failed is not None:
        status = procs[failed].returncode
        end = time.monotonic() + grace  # time to say why, when they failed for the same reason
        while time.monotonic() < end and any(p.poll() is None for p in procs):
          time.sleep(0.05)
        others = [i for i, p in enumerate(procs) if p.poll() is None]
        for i in others:
          procs[i].kill()
        for p in procs:
          p.wait()
        for t in streams:
          t.join(timeout=5)
        out.write(f"launch: process {failed} ended ({describe(status)})"
                  + (f"; stopped process(es) {', '.join(map(str, others))}.\n" if others else ".\n"))
        return status if status > 0 else 128 - status
      if all(p.poll() in ended for p in procs):
        for t in streams:
          t.join(timeout=5)
        stopped = any(p.returncode == errors.RESUMABLE for p in procs)
        # Ctrl-C is the user stopping it: done as asked. SIGTERM is a scheduler's preemption: resumable.
        return errors.RESUMABLE if stopped and signal.SIGINT not in received else 0
      time.sleep(0.05)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def main(argv):
  command = argv[1:]
  if command[:1] == ["--"]:
    command = command[1:]
  if not command:
    raise errors.UserError("No command given: python -m bigmodel.launch --processes=2 -- python -m bigmodel.train ...")
  f = flags.FLAGS
  procs = start(command, f.processes, f.devices_per_process, f.collective_timeout, death_signal=True)
  print(f"launch: {f.processes} process(es) x {f.devices_per_process} device(s), pids "
        f"{', '.join(str(p.pid) for p in procs)}", flush=True)
  sys.exit(supervise(procs, grace=f.grace))


if __name__ == "__main__":
  errors.run(main)
