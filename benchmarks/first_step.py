"""Where the time to the first train step goes, per config: imports, data, tracing, compiling.

Run:  python -m benchmarks.first_step [--configs=configs/mnist1d/cnn.py,...] [--repeats=3]
          [--variants="model.scan_layers=false;model.scan_layers=true"]

For each config, fresh processes: `import bigmodel.train` alone; `data.load` of the config's
dataset (its TFDS files and array cache already prepared); and the trainer itself, compilation
cache empty and then warm, with JAX's compile log on, stopped at its first step. The log's
seconds for lowering to StableHLO (every jitted function before that step, summed) and for
compiling the train step and the initialisation are reported; the trainer's own "first step done
N s after start" line gives the total. The initialisation compiles in a thread while the train
step is traced and compiled (train.Trainer), so the columns overlap and do not add up to it. Medians over --repeats; prints a markdown table. With
--variants, each config runs once per variant (`;` between variants, `,` between the overrides of
one), the variants in turn within each repeat, so that other load on the machine falls on all alike.
"""
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

CONFIGS = ["configs/mnist1d/logreg.py", "configs/mnist1d/mlp.py", "configs/mnist1d/cnn.py",
           "configs/mnist1d/gru.py", "configs/shakespeare/gpt_fast.py"]
flags.DEFINE_list("configs", CONFIGS, "Config files.")
flags.DEFINE_integer("repeats", 3, "Runs of each measurement (medians are reported).")
flags.DEFINE_string("variants", "", "Config overrides to compare: ';' between variants, ',' between the keys of one.")
# Tracing is left out: nested jits log their traces inside their parent's, so they would count twice.
PHASE = re.compile(r"Finished (jaxpr to MLIR module conversion|XLA compilation of) jit\((\S+)\) in ([\d.]+) sec")


def wall(code):
  start = time.perf_counter()
  subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
  return time.perf_counter() - start


def trainer(config, cache, overrides=""):
  """(first step seconds, {phase: seconds}) of the trainer with `cache` as compilation cache and
  `overrides` ("model.scan_layers=true,..."), stopped as soon as it reports its first step."""
  workdir = tempfile.mkdtemp(prefix="first_step_")
  extra = [f"--config.{item.strip()}" for item in overrides.split(",") if item.strip()]
  proc = subprocess.Popen([sys.executable, "-m", "bigmodel.train", f"--config={config}", f"--workdir={workdir}",
                           f"--config.compilation_cache={cache}", *extra], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, "JAX_LOG_COMPILES": "1"})
  phases, head = collections.Counter(), []
  for line in proc.stderr:
    head.append(line)
    if first := re.search(r"first step done ([\d.]+) s", line):
      break
    if m := PHASE.search(line):
      if not m.group(1).startswith("XLA"):
        phases["lower"] += float(m.group(3))
      elif m.group(2) in ("train_steps", "_init_state"):
        phases[m.group(2)] += float(m.group(3))
  proc.kill()
  proc.wait()
  if not first:
    raise RuntimeError("".join(head)[-3000:])
  return float(first.group(1)), phases


def main(argv):
  del argv
  rows = []
  variants = flags.FLAGS.variants.split(";")
  for config in flags.FLAGS.configs:
    module = config.removesuffix(".py").replace("/", ".")
    load = (f"import importlib, time; from bigmodel import data; c = importlib.import_module({module!r}).get_config(); "
            "t = time.perf_counter(); data.load(c.data); print(time.perf_counter() - t)")
    subprocess.run([sys.executable, "-c", load], check=True, capture_output=True)  # prepare, fill the array cache
    runs = {v: collections.defaultdict(list) for v in variants}
    for _ in range(flags.FLAGS.repeats):
      imported = wall("import bigmodel.train")
      loaded = float(subprocess.run([sys.executable, "-c", load], check=True, capture_output=True,
                                    text=True).stdout.split()[-1])
      for v in variants:
        runs[v]["import"].append(imported)
        runs[v]["data"].append(loaded)
        cache = tempfile.mkdtemp(prefix="first_step_cache_")
        cold, phases = trainer(config, cache, v)
        warm, _ = trainer(config, cache, v)
        runs[v]["cold"].append(cold)
        runs[v]["warm"].append(warm)
        for k in ("lower", "train_steps", "_init_state"):
          runs[v][k].append(phases[k])
    rows += [(config, v, {k: statistics.median(x) for k, x in runs[v].items()}) for v in variants]
  print("| config | overrides | first step, cold cache (s) | warm cache (s) | import bigmodel.train | data.load | "
        "lowering | XLA compile: train step | XLA compile: init (beside it) |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
  for config, v, m in rows:
    print(f"| {config} | {v or 'none'} | {m['cold']:.1f} | {m['warm']:.1f} | {m['import']:.1f} | {m['data']:.2f} | "
          f"{m['lower']:.1f} | {m['train_steps']:.1f} | {m['_init_state']:.1f} |")


if __name__ == "__main__":
  app.run(main)
