"""Evaluates a workdir's newest checkpoint: `python -m bigmodel.evaluate --workdir=runs/x`.

Prints accuracy, macro precision / recall / F1 and the confusion matrix (or MSE,
MAE and R² for regression) on the config's eval split, and writes them to
<workdir>/eval.json.
"""
import json
import os

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from bigmodel import checkpoint
from bigmodel.train import Experiment

def evaluate_workdir(workdir, split=None):
  """Returns (step, metrics) for the newest checkpoint in `workdir`."""
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} not found: is {workdir!r} a bigmodel.train workdir?")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if split:
    config.data.eval_split = split
  ex = Experiment(config)
  mngr = checkpoint.manager(workdir, config.keep_checkpoints)
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints: train first.")
  state, _ = checkpoint.restore(mngr, step, checkpoint.abstract(ex.state), with_data=False)
  return step, ex.evaluate(state)


def format_report(step, split, m):
  lines = [f"step {step}, split {split}:"]
  lines += [f"  {k}: {v:.4f}" for k, v in m.items() if isinstance(v, float)]
  if "confusion_matrix" in m:
    cm = np.array(m["confusion_matrix"])
    width = max(len(str(cm.max())), 3)
    lines.append("  confusion matrix (rows: true class, columns: predicted):")
    lines.append("      " + " ".join(f"{j:>{width}}" for j in range(len(cm))))
    lines += [f"  {i:>3} " + " ".join(f"{v:>{width}}" for v in row) for i, row in enumerate(cm)]
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  workdir = flags.FLAGS.workdir
  step, m = evaluate_workdir(workdir, flags.FLAGS.split)
  split = flags.FLAGS.split or json.load(open(os.path.join(workdir, "config.json")))["data"]["eval_split"]
  print(format_report(step, split, m))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump({"step": step, "split": split, **m}, f, indent=2)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A training workdir (holds config.json and checkpoints/).")
  flags.DEFINE_string("split", None, "Split to evaluate; default: the config's data.eval_split.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
