"""Fashion-MNIST (offline, Debian's package): CNN, ResNet-18 and ViT-Ti side by side.

Run:  python -m experiments.fashion_mnist.run [--models=cnn,resnet18,vit_ti] [--workdir=runs/fashion]

Trains configs/fashion_mnist/<model>.py once each (the budget is the config's
total_steps) and writes results.md next to this file: test accuracy, parameters,
wall time and training steps/s on this machine, beside the numbers in the dataset's
own README benchmark table.
"""
import importlib
import json
import os
import shutil
import time

import jax
import numpy as np
from absl import app, flags, logging

from bigmodel import runs, train

# From the benchmark table in github.com/zalandoresearch/fashion-mnist's README.
PUBLISHED = {"cnn": "87.6-91.6 % (2 conv layers + pooling)", "lenet": "—",
             "resnet18": "94.9 % (ResNet-18)", "vit_ti": "—"}
TARGET = {"cnn": 91.0, "lenet": None, "resnet18": 93.5, "vit_ti": 89.0}
TRAIN_EXAMPLES = 60_000
HERE = os.path.dirname(os.path.abspath(__file__))

flags.DEFINE_list("models", ["cnn", "resnet18", "vit_ti"], "Which configs/fashion_mnist/<model>.py to train.")
flags.DEFINE_string("workdir", "runs/fashion", "Where the runs' workdirs go.")
flags.DEFINE_string("out", HERE, "Where results.md goes.")


def run_one(name, workdir):
  config = importlib.import_module(f"configs.fashion_mnist.{name}").get_config()
  shutil.rmtree(workdir, ignore_errors=True)  # a finished run would only re-evaluate
  start = time.perf_counter()
  final = train.train_and_evaluate(config, workdir)
  seconds = time.perf_counter() - start
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  # Skip the first read: it includes compilation.
  speeds = [r["steps_per_sec"] for r in records if r["split"] == "train"][1:]
  n_params = sum(p.size for p in jax.tree.leaves(runs.load(workdir).params))
  return dict(name=name, accuracy=final["accuracy"] * 100, seconds=seconds, steps_per_sec=float(np.median(speeds)),
              params=n_params, steps=config.total_steps,
              epochs=config.total_steps * config.data.batch_size / TRAIN_EXAMPLES, model=config.model.name)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  flag = flags.FLAGS
  rows = ["| Model | Parameters | Budget (steps of 128 / epochs) | Test accuracy | Target | Published | "
          "Wall time | Train steps/s |", "|---|---|---|---|---|---|---|---|"]
  short = []
  for name in flag.models:
    r = run_one(name, os.path.join(flag.workdir, name))
    if TARGET[name] and r["accuracy"] < TARGET[name]:
      short.append(f"{name} reached {r['accuracy']:.1f} % after {r['epochs']:.1f} epochs "
                   f"({r['seconds'] / 60:.0f} min)")
    print(json.dumps(r))
    target = f"≥ {TARGET[name]} % ({'met' if r['accuracy'] >= TARGET[name] else 'not met'})" if TARGET[name] else "—"
    rows.append(f"| {name} (`{r['model']}`) | {r['params']:,} | {r['steps']:,} / {r['epochs']:.1f} | "
                f"{r['accuracy']:.1f} % | {target} | {PUBLISHED[name]} | {r['seconds'] / 60:.1f} min | "
                f"{r['steps_per_sec']:.2f} |")
  command = f"python -m experiments.fashion_mnist.run --models={','.join(flag.models)}"
  with open(os.path.join(flag.out, "results.md"), "w") as f:
    f.write(f"# Fashion-MNIST: CNN, ResNet-18 and ViT-Ti\n\nMade by `{command}` on {time.strftime('%Y-%m-%d')} "
            f"({os.cpu_count()}-core CPU, {os.uname().machine}, no accelerator), one seed each, on the "
            "offline copy of Fashion-MNIST (`apt-get install -y dataset-fashion-mnist`; 60,000 train / "
            "10,000 test). Wall time covers the whole run: data, compilation, training, evaluation "
            "and checkpoints. The budget of each model is its config's `total_steps`.\n\n"
            + "\n".join(rows) + "\n"
            + (f"\nTargets not met within a CPU-sized budget: {'; '.join(short)}. The published numbers "
               "come from tens of epochs; the same configs with a larger `total_steps` (e.g. "
               "`--config.total_steps=20000`) on an accelerator are the way to them.\n" if short else ""))


if __name__ == "__main__":
  app.run(main)
