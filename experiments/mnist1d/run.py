"""Reproduces the MNIST-1D paper table (Greydanus & Kobak, 2020) with bigmodel.

Run:  python -m experiments.mnist1d.run [--seeds=0,1,2] [--models=logreg,mlp,cnn,gru,transformer]

Trains each model's config in configs/mnist1d/ once per seed (the paper's setup:
Adam, lr 1e-2, batch 100, 8,000 steps; our Transformer has its own recipe), then
writes results.md (mean ± std test accuracy beside the published numbers, wall
time per run) and accuracy.png (test accuracy against steps) next to this file.
"""
import importlib
import json
import os
import shutil
import time

import matplotlib
import numpy as np
from absl import app, flags, logging

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bigmodel import train  # noqa: E402

PUBLISHED = {"logreg": 32, "mlp": 68, "cnn": 94, "gru": 91, "transformer": None}
NAMES = {"logreg": "Logistic regression", "mlp": "MLP", "cnn": "CNN", "gru": "GRU (bidirectional)",
         "transformer": "Transformer (ours)"}
HERE = os.path.dirname(os.path.abspath(__file__))

flags.DEFINE_list("models", list(PUBLISHED), "Which configs/mnist1d/<model>.py to train.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each is a separate run.")
flags.DEFINE_string("workdir", "runs/mnist1d_paper", "Where the runs' workdirs go.")
flags.DEFINE_string("out", HERE, "Where results.md and accuracy.png go.")


def run_one(name, seed, workdir):
  config = importlib.import_module(f"configs.mnist1d.{name}").get_config()
  config.seed = seed
  config.eval_every = 250
  start = time.perf_counter()
  final = train.train_and_evaluate(config, workdir)
  seconds = time.perf_counter() - start
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    curve = [(r["step"], r["accuracy"]) for r in map(json.loads, f) if r["split"] == "eval"]
  return final["accuracy"], seconds, curve


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  flag = flags.FLAGS
  results = {}
  for name in flag.models:
    for seed in map(int, flag.seeds):
      workdir = os.path.join(flag.workdir, f"{name}_seed{seed}")
      shutil.rmtree(workdir, ignore_errors=True)  # a finished run would only re-evaluate
      results.setdefault(name, []).append(run_one(name, seed, workdir))
      print(f"{name} seed {seed}: test accuracy {results[name][-1][0]:.4f}, {results[name][-1][1]:.1f} s")

  rows = ["| Model | Published | Ours: test accuracy (mean ± std) | Seeds | Wall time per run (s) |",
          "|---|---|---|---|---|"]
  for name, runs in results.items():
    acc = np.array([r[0] for r in runs]) * 100
    secs = np.array([r[1] for r in runs])
    pub = f"{PUBLISHED[name]} %" if PUBLISHED[name] else "—"
    rows.append(f"| {NAMES[name]} | {pub} | {acc.mean():.1f} ± {acc.std():.1f} % "
                f"({', '.join(f'{a:.1f}' for a in acc)}) | {len(runs)} | {secs.mean():.0f} |")
  table = "\n".join(rows)
  command = "python -m experiments.mnist1d.run " + " ".join(
      f"--{k}={','.join(v)}" for k, v in (("models", flag.models), ("seeds", flag.seeds)))
  with open(os.path.join(flag.out, "results.md"), "w") as f:
    f.write(f"# MNIST-1D: the paper's table, reproduced\n\nMade by `{command}` on "
            f"{time.strftime('%Y-%m-%d')} ({os.cpu_count()}-core CPU, {os.uname().machine}). "
            "Wall time covers the whole run: data, compilation, training, evaluation every "
            "250 steps and checkpoints.\n\n" + table + "\n\n![test accuracy against steps](accuracy.png)\n")

  plt.figure(figsize=(7, 4.5))
  for name, runs in results.items():
    steps = [s for s, _ in runs[0][2]]
    accs = np.array([[a for _, a in r[2]] for r in runs]) * 100
    line, = plt.plot(steps, accs.mean(0), label=NAMES[name])
    plt.fill_between(steps, accs.min(0), accs.max(0), color=line.get_color(), alpha=0.2)
  plt.xlabel("step"); plt.ylabel("test accuracy (%)"); plt.title("MNIST-1D (band: min–max over seeds)")
  plt.grid(alpha=0.3); plt.legend(); plt.tight_layout()
  plt.savefig(os.path.join(flag.out, "accuracy.png"), dpi=120)
  print(table)


if __name__ == "__main__":
  app.run(main)
