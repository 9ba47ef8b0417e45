"""bigmodel against PyTorch: the same models, data, batch and step count, timed side by side.

Run:  pip install -r benchmarks/requirements.txt   # torch 2.13.0, CPU build
      python -m benchmarks.vs_pytorch [--tasks=logreg,mlp,cnn,gru,shakespeare,shakespeare_char] [--repeats=3]

Each task alternates (A B A B ...) the PyTorch reference (benchmarks/pytorch_ref.py, our own
code) and the bigmodel command a user types (`python -m bigmodel.train --config=...`), each a
fresh process with a fresh workdir, timed from launch to exit: start-up, imports, data,
compilation, training and evaluation all count. bigmodel's compilation cache is empty for each of
those runs; one more run at the end reuses the last one's cache ("warm"). Data is prepared
once before any timing, for both: bigmodel's TFDS files and array cache, and the same arrays in
an .npz for PyTorch. Prints a markdown table of medians; the speedup is PyTorch's median wall time
over bigmodel's, so steps/s counted over the whole command have the same ratio. The training loops
alone are compared too: PyTorch's as it times itself, bigmodel's from the steps/s it logs.
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import ml_collections
import numpy as np
from absl import app, flags

from bigmodel import data

REF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch_ref.py")
TASKS = {  # name: (PyTorch reference arguments, bigmodel config and its overrides)
    "logreg": (["mnist1d", "--model=logreg"], ["configs/mnist1d/logreg.py"]),
    "mlp": (["mnist1d", "--model=mlp"], ["configs/mnist1d/mlp.py"]),
    "cnn": (["mnist1d", "--model=cnn"], ["configs/mnist1d/cnn.py"]),
    "gru": (["mnist1d", "--model=gru"], ["configs/mnist1d/gru.py"]),
    # A cheaper recipe to nanoGPT's loss: 1,000 steps of a 3-layer model (nanoGPT: 2,000 of 4 layers).
    "shakespeare": (["nanogpt"], ["configs/shakespeare/gpt_fast.py"]),
    # nanoGPT's own recipe, step for step: the same model (no biases, as its bias=False), batch and 2,000 steps
    # (evaluated once, at the end).
    "shakespeare_char": (["nanogpt"], ["configs/shakespeare/gpt_char.py", "--config.steps_per_call=100",
                                       "--config.eval_every=2000", "--config.model.use_bias=false"]),
}
flags.DEFINE_list("tasks", list(TASKS), "Tasks to run.")
flags.DEFINE_integer("repeats", 3, "Timed runs of each side per task (medians are reported).")
flags.DEFINE_string("root", "", "Scratch directory (default: a fresh temporary one).")
flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads for the reference (the issue measured 2).")


def export_arrays(root):
  """The data both sides train on, in the .npz form the PyTorch reference reads."""
  mnist = data.load(ml_collections.ConfigDict({**data.DEFAULTS, "name": "mnist1d"}))
  np.savez(os.path.join(root, "mnist1d.npz"),
           **{f"{k}_{split}": v for split in ("train", "test") for k, v in mnist.splits[split].arrays.items()})
  shakespeare = data.load(ml_collections.ConfigDict({**data.DEFAULTS, "name": "shakespeare", "seq_len": 64,
                                                     "eval_split": "val"}))
  np.savez(os.path.join(root, "shakespeare_char.npz"), train=shakespeare.splits["train"].tokens_N,
           val=shakespeare.splits["val"].tokens_N, vocab_size=shakespeare.tokenizer.vocab_size)


def timed(cmd, env=None):
  """(wall seconds, stdout, stderr) of one command run to completion; raises if it fails."""
  start = time.perf_counter()
  done = subprocess.run(cmd, capture_output=True, text=True, env=env)
  wall = time.perf_counter() - start
  if done.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
  return wall, done.stdout, done.stderr


def run_pytorch(task, root):
  args, _ = TASKS[task]
  npz = "shakespeare_char.npz" if task.startswith("shakespeare") else "mnist1d.npz"
  wall, out, _ = timed([sys.executable, REF, *args, f"--data={os.path.join(root, npz)}",
                        f"--threads={flags.FLAGS.torch_threads}"])
  result = json.loads(out.strip().splitlines()[-1])
  score = result["val_loss_full"] if task.startswith("shakespeare") else result["test_accuracy"]
  return {"wall": wall, "steps": result.get("steps", result.get("iters")), "score": score,
          "train_seconds": result["train_seconds"]}


def run_bigmodel(task, root, cache):
  _, (config, *overrides) = TASKS[task]
  workdir = tempfile.mkdtemp(dir=root, prefix=f"{task}_")
  wall, out, err = timed([sys.executable, "-m", "bigmodel.train", f"--config={config}", f"--workdir={workdir}",
                          f"--config.compilation_cache={cache}", *overrides])
  final = json.loads(out.strip().splitlines()[-1])
  first = re.search(r"first step done ([\d.]+) s", err)
  with open(os.path.join(workdir, "config.json")) as f:
    steps = json.load(f)["total_steps"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:  # the loop's own rate, compilation left out
    logged = [m for m in map(json.loads, f) if m["split"] == "train"]
  train_seconds = sum((b["step"] - a["step"]) / b["steps_per_sec"] for a, b in zip([{"step": 0}] + logged, logged))
  return {"wall": wall, "steps": steps, "score": final["loss" if task.startswith("shakespeare") else "accuracy"],
          "first_step": float(first.group(1)) if first else float("nan"), "train_seconds": train_seconds}


def machine():
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
             platform.processor())
  import jax
  torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                                 capture_output=True, text=True).stdout.strip()
  return f"{cpu}, {os.cpu_count()} cores; jax {jax.__version__}, torch {torch_version}, Python {platform.python_version()}"


def main(argv):
  del argv
  unknown = set(flags.FLAGS.tasks) - set(TASKS)
  if unknown:
    raise app.UsageError(f"Unknown tasks {sorted(unknown)}; known: {', '.join(TASKS)}.")
  root = flags.FLAGS.root or tempfile.mkdtemp(prefix="vs_pytorch_")
  os.makedirs(root, exist_ok=True)
  export_arrays(root)
  print(f"{time.strftime('%Y-%m-%d')}: {machine()}; scratch in {root}", file=sys.stderr)
  rows = []
  for task in flags.FLAGS.tasks:
    ref, ours = [], []
    for r in range(flags.FLAGS.repeats):  # A B A B ...: drift hits both sides alike
      ref.append(run_pytorch(task, root))
      ours.append(run_bigmodel(task, root, cache=os.path.join(root, f"cache_{task}_{r}")))
      print(f"{task} #{r}: PyTorch {ref[-1]['wall']:.1f} s ({ref[-1]['score']:.4f}), bigmodel "
            f"{ours[-1]['wall']:.1f} s ({ours[-1]['score']:.4f}, first step {ours[-1]['first_step']:.1f} s)",
            file=sys.stderr)
    warm = run_bigmodel(task, root, cache=os.path.join(root, f"cache_{task}_{flags.FLAGS.repeats - 1}"))
    rows.append(summarize(task, ref, ours, warm))
  print_table(rows)


def summarize(task, ref, ours, warm):
  med = lambda runs, key: statistics.median(r[key] for r in runs)
  return {"task": task, "ref_wall": med(ref, "wall"), "ref_steps": ref[0]["steps"], "ref_score": med(ref, "score"),
          "ref_train": med(ref, "train_seconds"), "wall": med(ours, "wall"), "steps": ours[0]["steps"],
          "score": med(ours, "score"), "first_step": med(ours, "first_step"), "train": med(ours, "train_seconds"), "warm_wall": warm["wall"],
          "warm_first_step": warm["first_step"], "speedup": med(ref, "wall") / med(ours, "wall"),
          "walls": ([round(r["wall"], 1) for r in ref], [round(r["wall"], 1) for r in ours])}


def print_table(rows):
  print("| task | PyTorch wall (s) | bigmodel wall (s) | speedup | PyTorch steps/s | bigmodel steps/s | "
        "PyTorch score | bigmodel score | first step cold / warm (s) | warm wall (s) |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['task']} | {r['ref_wall']:.1f} | {r['wall']:.1f} | {r['speedup']:.2f}x | "
          f"{r['ref_steps'] / r['ref_wall']:.0f} | {r['steps'] / r['wall']:.0f} | {r['ref_score']:.4f} | "
          f"{r['score']:.4f} | {r['first_step']:.1f} / {r['warm_first_step']:.1f} | {r['warm_wall']:.1f} |")
  print("\nEach run's wall time (PyTorch; bigmodel): " + "; ".join(
      f"{r['task']} {r['walls'][0]}; {r['walls'][1]}" for r in rows))
  print("Training loop alone, PyTorch against bigmodel (median s; bigmodel's from its logged steps/s, its first "
        "step's compilation left out): " + ", ".join(f"{r['task']} {r['ref_train']:.1f} / {r['train']:.1f} "
                                                     f"({r['ref_train'] / r['train']:.2f}x)" for r in rows))


if __name__ == "__main__":
  app.run(main)
