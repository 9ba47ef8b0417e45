"""Pretrain -> fine-tune vs from scratch: review sentiment on the offline fine-food reviews.

Run:  python -m experiments.text_classification.run [--workdir=runs/text_classification]

1. Pretrain a GPT language model on the 4,000 training reviews' text (configs/fine_foods/gpt_lm.py).
2. Fine-tune it to classify reviews as "great" or "other" (configs/fine_foods/gpt_finetune.py).
3. Train the same classifier from random weights: same tokenizer, steps and data.
Writes results.md next to this file: test accuracy and macro F1 of each (1,000 test reviews).
"""
import json
import math
import os
import shutil
import time

from absl import app, flags, logging

from bigmodel import train
from configs.fine_foods import gpt_finetune, gpt_lm

HERE = os.path.dirname(os.path.abspath(__file__))
flags.DEFINE_string("workdir", "runs/text_classification", "Where the three runs go (replaced).")
flags.DEFINE_string("out", HERE, "Where results.md goes.")


def timed(config, workdir):
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  final = train.train_and_evaluate(config, workdir)
  return final, time.perf_counter() - start


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  root = flags.FLAGS.workdir
  lm_dir = os.path.join(root, "lm")
  lm, lm_seconds = timed(gpt_lm.get_config(), lm_dir)
  rows, acc = [], {}
  for name, checkpoint in (("fine-tuned from the LM", lm_dir), ("from scratch", "")):
    c = gpt_finetune.get_config()
    c.data.tokenizer, c.init.checkpoint = lm_dir, checkpoint
    final, seconds = timed(c, os.path.join(root, "finetune" if checkpoint else "scratch"))
    print(name, json.dumps({k: v for k, v in final.items() if k != "confusion_matrix"}))
    acc[bool(checkpoint)] = final["accuracy"]
    rows.append(f"| {name} | {final['accuracy'] * 100:.1f} % | {final['f1_macro']:.3f} | "
                f"{final['confusion_matrix']} | {seconds / 60:.1f} min |")
  c = gpt_finetune.get_config()
  with open(os.path.join(flags.FLAGS.out, "results.md"), "w") as f:
    f.write(f"""# Review sentiment: pretrained GPT fine-tuned vs trained from scratch

Made by `python -m experiments.text_classification.run` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()}-core CPU,
no accelerator). Data: `small_fine_foods` from Debian's r-cran-modeldata (4,000 train / 1,000 test
Amazon fine-food reviews, "great" = 5 stars vs "other"; 65.8 % of the test reviews are "great", the
accuracy of always answering "great").

Pretraining: `configs/fine_foods/gpt_lm.py`, a {c.model.num_layers}-layer, {c.model.dim}-wide GPT language model on the
training reviews' text only, BPE tokenizer of 1,024 pieces; {gpt_lm.get_config().total_steps} steps,
validation loss {lm['loss']:.3f} (bits per byte {lm['bits_per_byte']:.3f}), {lm_seconds / 60:.1f} min.

Classification: `configs/fine_foods/gpt_finetune.py` ({c.total_steps} steps of {c.data.batch_size}, mean-pooled hidden states
into a fresh head, first {c.data.seq_len} tokens of each review); the baseline differs only in
`--config.init.checkpoint=` (random initial weights).

| Classifier | Test accuracy | Macro F1 | Confusion matrix (rows true other/great) | Wall time |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n" + verdict(acc[True], acc[False]))


def verdict(tuned, scratch, n=1000):
  """The gain, set against the sampling noise of two accuracies measured on n test reviews."""
  p = (tuned + scratch) / 2
  se = math.sqrt(2 * p * (1 - p) / n) * 100
  gain = (tuned - scratch) * 100
  clear = "larger than" if abs(gain) > 2 * se else "within"
  return (f"\nGain from pretraining: {gain:+.1f} points, {clear} twice the standard error of a difference "
          f"between two accuracies on {n:,} reviews ({se:.1f} points); one seed each.\n")


if __name__ == "__main__":
  app.run(main)
