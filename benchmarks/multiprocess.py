"""Steps/s of one config split over processes × devices on this machine: what cross-process
collectives (gloo over 127.0.0.1) cost against in-process ones.

Run:  python -m benchmarks.multiprocess [--config=configs/shakespeare/gpt_char.py] [--steps=100] [--repeats=3]

Each layout trains the same global batch on 4 CPU devices in all: 1 process × 4 devices (no
jax.distributed), 2 × 2 and 4 × 1 (bigmodel.launch). Layouts are interleaved (A B C A B C ...);
steps/s is read from the run's own metrics.jsonl after its first logged interval (compilation
excluded); the table gives medians and each layout's time per step against 1 × 4's.
"""
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_string("config", "configs/shakespeare/gpt_char.py", "Config file.")
flags.DEFINE_integer("steps", 100, "Steps per run; the first logged interval (compilation) is dropped.")
flags.DEFINE_integer("repeats", 3, "Runs of each layout (medians are reported).")
flags.DEFINE_list("set", ["data.eval_examples=512", "data.eval_batch_size=64", "optimizer.warmup_steps=10"],
                  "Extra --config.<key>=<value> overrides.")
LAYOUTS = [(1, 4), (2, 2), (4, 1)]  # (processes, devices per process)


def run(processes, devices):
  """(steps/s after the first interval, wall seconds of the whole command)."""
  f = flags.FLAGS
  workdir = tempfile.mkdtemp(prefix="multiprocess_")
  log_every = f.steps // 10
  train = [sys.executable, "-m", "bigmodel.train", f"--config={f.config}", f"--workdir={workdir}",
           f"--config.total_steps={f.steps}", f"--config.log_every={log_every}", f"--config.eval_every={f.steps}",
           f"--config.checkpoint_every={f.steps}", "--config.compilation_cache=",
           *(f"--config.{kv}" for kv in f.set)]
  if processes == 1:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    command = train
  else:
    env = dict(os.environ)
    command = [sys.executable, "-m", "bigmodel.launch", f"--processes={processes}",
               f"--devices_per_process={devices}", "--", *train]
  start = time.perf_counter()
  proc = subprocess.run(command, env=env, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if proc.returncode:
    raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  rates = [r["steps_per_sec"] for r in rows if r["split"] == "train"][1:]
  return statistics.median(rates), seconds


def main(argv):
  del argv
  results = collections.defaultdict(list)
  for _ in range(flags.FLAGS.repeats):
    for layout in LAYOUTS:
      results[layout].append(run(*layout))
  base = statistics.median(r for r, _ in results[LAYOUTS[0]])
  print(f"{flags.FLAGS.config}, {flags.FLAGS.steps} steps, {os.cpu_count()} CPU cores, "
        f"medians of {flags.FLAGS.repeats} interleaved runs\n")
  print("| processes × devices | steps/s | time per step vs 1 × 4 | whole command (s) | all runs (steps/s) |")
  print("|---|---|---|---|---|")
  for layout in LAYOUTS:
    rates = [r for r, _ in results[layout]]
    rate = statistics.median(rates)
    print(f"| {layout[0]} × {layout[1]} | {rate:.1f} | {base / rate:.2f}× | "
          f"{statistics.median(s for _, s in results[layout]):.0f} | {', '.join(f'{r:.1f}' for r in rates)} |")


if __name__ == "__main__":
  app.run(main)
