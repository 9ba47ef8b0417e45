"""Test accuracy against sparsity: gradual magnitude pruning vs one-shot pruning of a trained model.

Run:  python -m experiments.pruning.run [--tasks=mnist1d_cnn,fashion_resnet18] [--seeds=0,1,2]

For each task and seed it trains (or reuses) a dense model, then, for each sparsity:
  gradual   the task's full training run with pruning.schedule=polynomial (Zhu & Gupta 2017): the
            sparsity rises from 0 to the target between 1/8 and 3/4 of the steps, then the sparse
            model trains on;
  one-shot  the dense checkpoint pruned by magnitude at once (pruning.schedule=one_shot,
            init.checkpoint), evaluated as is ("no fine-tune": one step at learning rate 0) and
            after fine-tuning for `finetune_steps`.
Writes results.md (one table per task) and sparsity.png next to this file.
"""
import importlib
import json
import os
import time

import matplotlib
import numpy as np
from absl import app, flags, logging

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bigmodel import train  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# Fine-tuning steps and learning rate after one-shot pruning; whether gradual runs fit; seeds that fit.
TASKS = {
    "mnist1d_cnn": dict(config="configs.mnist1d.cnn", title="MNIST-1D, paper CNN",
                        finetune_steps=2000, finetune_lr=1e-2, gradual=True),
    # 4 s a step on a 2-core CPU: the dense run is the config's own (or runs/fashion/resnet18, if there),
    # and only one-shot pruning with a short fine-tune fits; gradual needs the full run per sparsity.
    "fashion_resnet18": dict(config="configs.fashion_mnist.resnet18", title="Fashion-MNIST, ResNet-18",
                             finetune_steps=40, finetune_lr=0.01, gradual=False, max_seeds=1),
}

flags.DEFINE_list("tasks", list(TASKS), "Which tasks to run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each is a separate dense run and its pruned runs "
                  "(ResNet-18: the first only).")
flags.DEFINE_list("sparsities", ["0.5", "0.75", "0.9", "0.95"], "Target sparsities.")
flags.DEFINE_string("workdir", "runs/pruning", "Where the runs' workdirs go.")
flags.DEFINE_string("dense_fashion_resnet18", "runs/fashion/resnet18",
                    "A finished workdir of configs/fashion_mnist/resnet18.py to prune (trained here if absent).")
flags.DEFINE_string("out", HERE, "Where results.md and sparsity.png go.")


def run(config, workdir):
  """(test accuracy, measured in-scope sparsity, seconds); a finished workdir is read, not rerun."""
  done = os.path.join(workdir, "result.json")
  if not os.path.exists(done):
    start = time.perf_counter()
    accuracy = train.train_and_evaluate(config, workdir)["accuracy"]
    report_path = os.path.join(workdir, "sparsity.json")
    sparsity = json.load(open(report_path))["in_scope_sparsity"] if os.path.exists(report_path) else 0.0
    with open(done, "w") as f:
      json.dump([accuracy, sparsity, time.perf_counter() - start], f)
  return tuple(json.load(open(done)))


def base_config(task, seed):
  c = importlib.import_module(TASKS[task]["config"]).get_config()
  c.seed = seed
  return c


def run_task(task, seed, sparsities, root):
  t = TASKS[task]
  dense_dir = os.path.join(root, f"{task}_seed{seed}", "dense")
  if task == "fashion_resnet18" and seed == 0 and os.path.exists(flags.FLAGS.dense_fashion_resnet18):
    dense_dir = flags.FLAGS.dense_fashion_resnet18
  rows = {"dense": run(base_config(task, seed), dense_dir)}
  print(f"{task} seed {seed} dense: {rows['dense']}")
  for s in sparsities:
    name = f"{task}_seed{seed}"
    if t["gradual"]:
      c = base_config(task, seed)
      c.pruning.update(target_sparsity=s, schedule="polynomial", start_step=c.total_steps // 8,
                       end_step=c.total_steps * 3 // 4, frequency=max(c.total_steps // 64, 1))
      rows[("gradual", s)] = run(c, os.path.join(root, name, f"gradual_{s}"))
    for label, steps, lr in (("one-shot, no fine-tune", 1, 0.0),
                             ("one-shot + fine-tune", t["finetune_steps"], t["finetune_lr"])):
      c = base_config(task, seed)
      c.init.update(checkpoint=dense_dir, reinit=())
      c.pruning.update(target_sparsity=s, schedule="one_shot", start_step=0)
      c.optimizer.update(learning_rate=lr, schedule="constant", warmup_steps=0)
      c.update(total_steps=steps, eval_every=steps, checkpoint_every=steps, log_every=min(c.log_every, steps))
      rows[(label, s)] = run(c, os.path.join(root, name, f"{'finetune' if steps > 1 else 'prune'}_{s}"))
    print(f"{task} seed {seed} sparsity {s}: " + ", ".join(
        f"{k[0]} {v[0]:.4f}" for k, v in rows.items() if k != "dense" and k[1] == s))
  return rows


def table(task, results, sparsities):
  """results: one rows-dict per seed."""
  methods = [m for m in ("gradual", "one-shot, no fine-tune", "one-shot + fine-tune")
             if (m, sparsities[0]) in results[0]]
  acc = lambda key: np.array([r[key][0] for r in results]) * 100
  cell = lambda a: f"{a.mean():.1f}" + (f" ± {a.std():.1f}" if len(a) > 1 else "")
  dense = acc("dense")
  lines = [f"| Method | 0 % (dense) | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |",
           "|---|---|" + "---|" * len(sparsities)]
  for m in methods:
    lines.append(f"| {m} | {cell(dense)} | " + " | ".join(cell(acc((m, s))) for s in sparsities) + " |")
  measured = [results[0][(methods[0], s)][1] for s in sparsities]
  lines.append("| measured in-scope sparsity | 0 | " + " | ".join(f"{m:.3f}" for m in measured) + " |")
  seconds = {m: np.median([r[(m, s)][2] for r in results for s in sparsities]) for m in methods}
  timing = ", ".join(f"{m} {v:.0f} s" for m, v in seconds.items())
  return "\n".join(lines), f"dense {np.median([r['dense'][2] for r in results]):.0f} s, {timing}"


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  sparsities = [float(s) for s in f.sparsities]
  seeds = [int(s) for s in f.seeds]
  results = {task: [run_task(task, seed, sparsities, f.workdir) for seed in seeds[:TASKS[task].get("max_seeds")]]
             for task in f.tasks}

  command = "python -m experiments.pruning.run " + " ".join(
      f"--{k}={','.join(v)}" for k, v in (("tasks", f.tasks), ("seeds", f.seeds), ("sparsities", f.sparsities)))
  sections = []
  for task, res in results.items():
    t = TASKS[task]
    text, timing = table(task, res, sparsities)
    c = base_config(task, 0)
    sections.append(
        f"## {t['title']}\n\nTest accuracy (%), {len(res)} seed(s){' (mean ± std)' if len(res) > 1 else ''}. "
        f"Dense: {c.total_steps} steps. "
        + (f"Gradual: the same {c.total_steps} steps, pruning from step {c.total_steps // 8} to "
           f"{c.total_steps * 3 // 4} every {max(c.total_steps // 64, 1)} steps. " if t["gradual"] else "")
        + f"Fine-tune: {t['finetune_steps']} steps at learning rate {t['finetune_lr']}. "
        f"Median wall time per run: {timing}.\n\n{text}\n")
  with open(os.path.join(f.out, "results.md"), "w") as out:
    out.write(f"# Magnitude pruning: accuracy against sparsity\n\nMade by `{command}` on "
              f"{time.strftime('%Y-%m-%d')} ({os.cpu_count()}-core CPU). Sparsity counts the pruned "
              "kernels (Dense and Conv weights, `pruning.scope` default); biases and norms stay dense. "
              "Global magnitude threshold.\n\n" + "\n".join(sections) +
              "\n![accuracy against sparsity](sparsity.png)\n")

  fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
  for ax, (task, res) in zip(axes[0], results.items()):
    dense = np.mean([r["dense"][0] for r in res]) * 100
    for m in ("gradual", "one-shot, no fine-tune", "one-shot + fine-tune"):
      if (m, sparsities[0]) in res[0]:
        ax.plot([0, *sparsities], [dense, *[np.mean([r[(m, s)][0] for r in res]) * 100 for s in sparsities]],
                marker="o", label=m)
    ax.set_title(TASKS[task]["title"]); ax.set_xlabel("sparsity"); ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3); ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(f.out, "sparsity.png"), dpi=120)
  print("\n".join(sections))


if __name__ == "__main__":
  app.run(main)
