"""Evaluation: the summed statistics of a split, and `python -m bigmodel.evaluate --workdir=runs/x`.

The command prints accuracy, macro precision / recall / F1 and the confusion matrix (or MSE,
MAE and R² for regression, loss and bits per byte for language models) of a workdir's newest
checkpoint on the config's eval split, and writes them to <workdir>/eval.json. The trainer
evaluates through the same functions.
"""
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from tqdm import tqdm

from bigmodel import config as config_lib, data, errors, experiment, platform, runs, sharding, tasks, workdir as workdir_lib
from bigmodel.data import pipeline


def eval_step(variables, batch, *, apply_fn, task, loss_fn):
  """The task's sums over the real (mask=True) rows of a batch."""
  out = apply_fn(variables, batch["x"], train=False, **data.model_inputs(batch))
  return task.eval_sums(out, batch["y"], batch["mask"].astype(jnp.float32), loss_fn)


def jit_eval_step(exp, variables_sharding, mesh):
  """`eval_step` for experiment `exp`, jitted for variables placed with `variables_sharding`."""
  step = functools.partial(eval_step, apply_fn=exp.model.apply, task=exp.task, loss_fn=exp.loss_fn)
  return jax.jit(sharding.traced_on(step, mesh), in_shardings=(variables_sharding, sharding.batch_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


def evaluate(exp, step_fn, variables, mesh, split=None):
  """The task's metrics of `variables` on `split` (default: the config's eval split)."""
  c, dataset = exp.config.data, exp.dataset
  split = split or c.eval_split
  block = platform.must_block_each_step(mesh)
  total = None
  examples = dataset.splits[split]
  indices = pipeline.eval_indices(len(examples), c.eval_examples, dataset.kind == "corpus")
  if len(indices) < len(examples) and jax.process_index() == 0:
    what = "windows" if dataset.kind == "corpus" else "examples"
    tqdm.write(f"evaluated on {len(indices):,} of {len(examples):,} {what} of {split} (data.eval_examples="
               f"{c.eval_examples}; 0 = all)", file=sys.stderr)
  for batch in pipeline.eval_batches(examples, c.eval_batch_size, dataset.norm, dataset.mask, indices):
    sums = step_fn(variables, sharding.put_batch(batch, mesh))
    total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    if block:
      jax.block_until_ready(total)
  return exp.task.metrics(jax.device_get(total), dataset, split)


def evaluate_workdir(workdir, split=None):
  """Returns (step, metrics) for the newest checkpoint in `workdir`."""
  run = runs.load(workdir)
  c = run.config  # as resolved when training started: no task, model or hub config is worked out again
  if split:
    c.data.eval_split = split
  if run.tokenizer is not None:  # the run's own tokenizer: a BPE is not rebuilt, nor a hub one fetched
    c.data.tokenizer = workdir
  exp = experiment.Experiment(c, data.load(c.data, c.seed), tasks.get(c.task), run.model)
  step_fn = jit_eval_step(exp, sharding.replicated(run.mesh), run.mesh)
  return run.step, evaluate(exp, step_fn, {"params": run.params, **run.model_state}, run.mesh)


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
  split = flags.FLAGS.split or config_lib.read(workdir).data.eval_split
  print(format_report(step, split, m))
  if jax.process_index() == 0:
    workdir_lib.write_json(workdir, workdir_lib.EVAL, {"step": step, "split": split, **m})


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A training workdir (holds config.json and checkpoints/).")
  flags.DEFINE_string("split", None, "Split to evaluate; default: the config's data.eval_split.")
  flags.mark_flags_as_required(["workdir"])
  errors.run(main)
