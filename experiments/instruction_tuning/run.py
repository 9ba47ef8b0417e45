"""Instruction tuning a real LLM for a business task: food-review sentiment as a chat question, answered by
SmolLM2-135M-Instruct zero-shot, after LoRA instruction tuning and after full fine-tuning on N training reviews.

Run:  python -m experiments.instruction_tuning.run [--workdir=runs/instruction_tuning] [--seeds=0,1,2]
          [--budgets=100,500] [--full_budgets=100] [--test_reviews=100] [--max_words=40]

1. The reviews of at most --max_words words as chat .jsonl (data.py): "Review: ... Is this review great or
   other?" -> "great" / "other"; the test file is the first --test_reviews short test reviews.
2. Zero-shot: SmolLM2-135M-Instruct from its GGUF file (configs/fine_foods/smollm2_chat_lora.py's), as it is.
3. For each budget N and seed s: configs/fine_foods/smollm2_chat_lora.py (--budgets) and
   configs/fine_foods/smollm2_chat_full.py (--full_budgets) with data.train_examples=N (drawn with seed s,
   uniformly: chat data has no labels to stratify by) and seed=s, for the config's 50 steps (2 passes over
   100 reviews) or one pass over N if that is longer (N = 500: 125 steps of 4).
4. Each model answers every test question greedily (the server's decoding, stopping at <|im_end|>, at most
   4 tokens); an answer counts when it is the test label ("great" or "other" as the whole answer, case and
   final punctuation aside); anything else is wrong.

Writes results.md next to this file: accuracy per seed, mean +- 95 % CI (t over seeds), the paired gain over
zero-shot, how many answers were neither word, and the wall time of each part. Finished runs (a workdir with
answers.json) are read back instead of trained again.
"""
import json
import math
import os
import platform
import subprocess
import time

import jax
import numpy as np
from absl import app, flags, logging
from scipy import stats

from bigmodel import chat, decoding, generate, huggingface, models, runs, train
from bigmodel.huggingface import gguf
from configs.fine_foods import fasttext, minilm_classifier, smollm2_chat_full, smollm2_chat_lora
from experiments.instruction_tuning import data

HERE = os.path.dirname(os.path.abspath(__file__))
flags.DEFINE_string("workdir", "runs/instruction_tuning", "Where the data and the runs go; finished runs are reused.")
flags.DEFINE_string("out", HERE, "Where results.md goes.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: each draws the N training reviews, the LoRA factors and the order.")
flags.DEFINE_list("budgets", ["100"], "Numbers of training reviews for LoRA instruction tuning.")
flags.DEFINE_list("full_budgets", [], "Numbers of training reviews for full fine-tuning.")
flags.DEFINE_integer("test_reviews", 100, "Test questions: the first this many short test reviews.")
flags.DEFINE_integer("max_words", 40, "Reviews of at most this many words (train and test).")
flags.DEFINE_bool("classifiers", True, "Also train the classifiers of experiments/transfer/published.md on the same "
                  "reviews, at each N of --budgets.")
flags.DEFINE_integer("steps", 0, "Training steps; 0 = the config's, or one pass over N if longer.")
flags.DEFINE_string("note", "", "A line for results.md (e.g. how a run was interrupted and resumed).")
MAX_NEW_TOKENS = 4  # "great" or "other" and <|im_end|>: a longer answer is wrong anyway
METHODS = {"lora": ("LoRA instruction-tuned", smollm2_chat_lora), "full": ("full fine-tuning", smollm2_chat_full)}


def _fasttext():
  c = fasttext.get_config()
  c.optimizer.learning_rate = 1e-2  # experiments/transfer's: at 1e-3 its few steps leave it answering "great"
  return c


# experiments/transfer/published.md's text classifiers, trained and tested here on the same files (the chat
# question as their text, its answer as the label) with that experiment's recipe: the first 64 tokens, 10 passes
# over N in 40 to 150 steps.
CLASSIFIERS = {"MiniLM-L6 classifier, fine-tuned": minilm_classifier.get_config,
               "fastText classifier (scratch)": _fasttext}


def answers(model, params, tok, template, records):
  """The greedy answer to each record's prompt, as text (the end-of-turn token left out)."""
  prompts = [template.encode([{"role": "user", "content": r["prompt"]}]) for r in records]
  decoder = generate.decoder(model, params, model.max_len)
  out = decoding.generate(decoder, prompts, MAX_NEW_TOKENS, temperature=0.0, stop_ids=template.stop_ids)
  return [tok.decode([t for t in ids[len(p):] if t not in template.stop_ids]) for ids, p in zip(out, prompts)]


def score(said, records):
  parsed = [data.answer(a) for a in said]
  return {"accuracy": float(np.mean([p == r["completion"] for p, r in zip(parsed, records)])),
          "neither": sum(p is None for p in parsed), "answers": said}


def zero_shot(path, records, workdir):
  """SmolLM2 as published, read from its GGUF file."""
  done = os.path.join(workdir, "answers.json")
  if os.path.exists(done):
    return json.load(open(done))
  import flax.linen as nn
  start = time.perf_counter()
  config = {**huggingface.model_config(path), "max_len": smollm2_chat_lora.get_config().model.max_len}
  config.setdefault("num_outputs", config["vocab_size"])
  model = models.build(config)
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), np.zeros((1, 8), np.int32))))
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  params, _, _ = huggingface.load(path, config, fresh.pop("params"), fresh)
  tok = gguf.tokenizer(path)
  result = {**score(answers(model, params, tok, chat.template(tok), records), records),
            "seconds": time.perf_counter() - start}
  os.makedirs(workdir, exist_ok=True)
  json.dump(result, open(done, "w"))
  return result


def tune(method, n, seed, files, records, workdir):
  """METHODS[method]'s config on `n` training reviews with `seed`, then its greedy answers."""
  done = os.path.join(workdir, "answers.json")
  if os.path.exists(done):
    return json.load(open(done))
  c = METHODS[method][1].get_config()
  c.seed, c.data.train_examples, c.data.files = seed, n, tuple(files)
  c.total_steps = c.eval_every = c.checkpoint_every = (
      flags.FLAGS.steps or max(c.total_steps, math.ceil(n / c.data.batch_size)))
  start = time.perf_counter()
  metrics = train.train_and_evaluate(c, workdir)
  trained = time.perf_counter() - start
  run = runs.load(workdir)
  result = {**score(answers(run.model, run.params, run.tokenizer, chat.template(run.tokenizer), records), records),
            "seconds": time.perf_counter() - start, "train_seconds": trained,
            "eval_answer_loss": float(metrics["loss"]) if metrics and "loss" in metrics else None}
  json.dump(result, open(done, "w"))
  return result


def classify(name, n, seed, files, workdir):
  """CLASSIFIERS[name] trained on `n` of the training questions with `seed`: its test accuracy."""
  done = os.path.join(workdir, "result.json")
  if os.path.exists(done):
    return json.load(open(done))
  c = CLASSIFIERS[name]()
  c.data.name, c.data.files, c.data.text_key, c.data.label_key = "text_csv", tuple(files), "prompt", "completion"
  c.data.seq_len, c.data.eval_split, c.data.eval_examples = 64, "test", 0
  c.seed, c.data.train_examples = seed, n
  c.total_steps = int(np.clip(math.ceil(10 * n / c.data.batch_size), 40, 150))
  c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, c.total_steps // 10)
  c.log_every = c.eval_every = c.checkpoint_every = c.total_steps
  start = time.perf_counter()
  final = train.train_and_evaluate(c, workdir)
  result = {"accuracy": float(final["accuracy"]), "neither": 0, "seconds": time.perf_counter() - start}
  json.dump(result, open(done, "w"))
  return result


def mean_ci(values):
  """(mean, half-width of the 95 % CI of the mean: t over the values), in percent; no width from one value."""
  v = 100 * np.asarray(values, float)
  if len(v) < 2:
    return v.mean(), float("nan")
  return v.mean(), stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))


def cell(values):
  m, h = mean_ci(values)
  return f"{m:.1f}" + ("" if math.isnan(h) else f" ± {h:.1f}")


def cpu_name():
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
  except (OSError, StopIteration):
    return platform.processor() or "unknown CPU"


def write_results(out, f, zero, tuned, n_train, started):
  seeds = [int(s) for s in f.seeds]
  great = np.mean([r["completion"] == "great" for r in data.records("test", f.max_words, f.test_reviews)])
  rows = [f"| always \"great\" (the majority answer) | – | {100 * great:.1f} | 0 | – | – | – |",
          f"| zero-shot | – | {100 * zero['accuracy']:.1f} (same for every seed) | {zero['neither']} | – | "
          f"{cell([zero['accuracy'] - great])} | {zero['seconds']:.0f} |"]
  for (label, n), by_seed in tuned.items():
    acc = [by_seed[s]["accuracy"] for s in seeds]
    gain = [a - zero["accuracy"] for a in acc]
    rows.append(f"| {label} | {n} | {cell(acc)} ({', '.join(f'{100 * a:.0f}' for a in acc)}) | "
                f"{', '.join(str(by_seed[s]['neither']) for s in seeds)} | {cell(gain)} | "
                f"{cell([a - great for a in acc])} | {', '.join(str(round(by_seed[s]['seconds'])) for s in seeds)} |")
  examples = "\n".join(f"- {json.dumps(a)}" for a in zero["answers"][:5])
  missing = [*([] if "500" in f.budgets else ["N = 500"]), *([] if "100" in f.full_budgets else
                                                                ["full fine-tuning at N = 100"]),
             *([] if len(seeds) >= 3 else ["seeds 0-2"]), "the whole test split"]
  timing = ("" if not f.note else f"\n{f.note}\n")
  text = f"""# Instruction tuning SmolLM2-135M-Instruct for review sentiment

`python -m experiments.instruction_tuning.run --seeds={','.join(f.seeds)} --budgets={','.join(f.budgets)} \
{f'--full_budgets={",".join(f.full_budgets)} ' if f.full_budgets else ''}--test_reviews={f.test_reviews} --max_words={f.max_words}{f' --steps={f.steps}' if f.steps else ''}`
({time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} cores, shared with other jobs; {(time.time() - started) / 60:.0f} min).

The question: "Review: <text>\\n\\nIs this review great or other?"; the answer "great" or "other". Greedy answers of at
most {MAX_NEW_TOKENS} tokens; an answer that is neither word is wrong. Test: the first {f.test_reviews} fine_foods test reviews
of at most {f.max_words} words ({100 * great:.0f} % "great"); training: N of the {n_train} training reviews of at most
{f.max_words} words, drawn with the seed. LoRA: configs/fine_foods/smollm2_chat_lora.py (rank 8, lr 1e-3); full
fine-tuning: configs/fine_foods/smollm2_chat_full.py (every weight, lr 5e-5, not tuned); both with the loss on the
answer and its <|im_end|> only, for 50 steps of 4 conversations (2 passes over 100) or one pass over N if longer
(N = 500: 125 steps). The classifiers (a label for every review, so never "neither") are
experiments/transfer/published.md's, trained and tested here on the same files: the question as their text, its
answer as the label, 10 passes over N in 40 to 150 steps. Accuracy in %, mean ± 95 % CI over seeds {', '.join(map(str, seeds))} (t; none with one seed), each seed's in
brackets; "gain" is paired: each seed's accuracy minus zero-shot's (or always answering "great"'s) on the same
test questions.

| model | N | accuracy (%) | answers neither word | gain over zero-shot (points) | over always "great" | seconds per run |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{timing}
Zero-shot's first answers, as generated:
{examples}

Not run here (the issue's full table): {', '.join(missing)}.
"""
  with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as file:
    file.write(text)


def main(argv):
  del argv
  f, started = flags.FLAGS, time.time()
  files = data.write(os.path.join(f.workdir, "data"), f.max_words, f.test_reviews)
  records = [json.loads(line) for line in open(files[1], encoding="utf-8")]
  n_train = sum(1 for _ in open(files[0], encoding="utf-8"))
  path = smollm2_chat_lora.checkpoint()
  zero = zero_shot(path, records, os.path.join(f.workdir, "zero_shot"))
  logging.info("zero-shot: %.1f %% (%d neither word), %.0f s", 100 * zero["accuracy"], zero["neither"], zero["seconds"])
  tuned = {}
  for method, budgets in (("lora", f.budgets), ("full", f.full_budgets)):
    for n in map(int, budgets):
      for seed in map(int, f.seeds):
        result = tune(method, n, seed, files, records, os.path.join(f.workdir, f"{method}_n{n}_seed{seed}"))
        logging.info("%s N=%d seed %d: %.1f %% (%d neither word), %.0f s", method, n, seed, 100 * result["accuracy"],
                     result["neither"], result["seconds"])
        tuned.setdefault((METHODS[method][0], n), {})[seed] = result
  for name in CLASSIFIERS if f.classifiers else ():
    for n in map(int, f.budgets):
      for seed in map(int, f.seeds):
        slug = name.split(" ")[0].lower()
        tuned.setdefault((name, n), {})[seed] = classify(name, n, seed, files,
                                                         os.path.join(f.workdir, f"{slug}_n{n}_seed{seed}"))
  write_results(f.out, f, zero, tuned, n_train, started)


if __name__ == "__main__":
  app.run(main)
