"""One config's train step under several settings, interleaved: which is faster here, now.

Run:  python -m benchmarks.variants --config=configs/shakespeare/gpt_char.py \\
          --variants="model.attention=einsum;model.attention=xla" --repeats=3 --blocks=10 --steps=10

Each repeat builds every variant's trainer in turn, compiling its train step from scratch (the
persistent compilation cache is off), then times `--blocks` blocks of `--steps` blocked steps, the
variants taking turns block by block (A B A B ...): load from other work on a shared machine falls
on all of them alike. `--set` applies to every variant (e.g. a bigger model). Prints, per variant,
the median compile time over the repeats and the median over all blocks of each block's median
step time, with every repeat's numbers, as markdown. The steps are benchmarks/train_step.py's.
"""
import ast
import importlib
import os
import statistics

import jax
from absl import app, flags, logging

from benchmarks import train_step

flags.DEFINE_string("config", "configs/shakespeare/gpt_char.py", "Config file.")
flags.DEFINE_string("variants", "model.attention=einsum;model.attention=xla",
                    "Settings to compare: ';' between variants, ',' between the keys of one.")
flags.DEFINE_string("set", "", "Settings for every variant, as one variant's: key=value,key=value.")
flags.DEFINE_integer("repeats", 3, "Trainers built (and step compiles) per variant.")
flags.DEFINE_integer("blocks", 10, "Timed blocks of --steps steps per variant and repeat, the variants in turn.")
# --steps (blocked steps per block) is benchmarks/train_step.py's flag.


def settings(text):
  """"model.scan_layers=true,data.batch_size=4" -> [("model.scan_layers", True), ("data.batch_size", 4)]."""
  out = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    key, value = item.split("=", 1)
    value = {"true": "True", "false": "False"}.get(value.lower(), value)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):  # a bare word: a string
      pass
    out.append((key, value))
  return out


def config(path, *settings_lists):
  c = importlib.import_module(path.removesuffix(".py").replace("/", ".")).get_config()
  for key, value in (kv for s in settings_lists for kv in s):
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  jax.config.update("jax_enable_compilation_cache", False)  # every trainer compiles
  f = flags.FLAGS
  common, variants = settings(f.set), [v.strip() for v in f.variants.split(";")]
  compiles, blocks = {v: [] for v in variants}, {v: [] for v in variants}
  for _ in range(f.repeats):
    steppers = {}
    for v in variants:
      steppers[v] = train_step.Stepper(config(f.config, common, settings(v)), min(f.steps, 8))
      compiles[v].append(steppers[v].report["compile_seconds"])
    for _ in range(f.blocks):
      for v in variants:
        blocks[v].append(statistics.median(steppers[v].run(f.steps)))
    first = steppers[variants[0]]
    c, params, per_example = first.ex.exp.config, first.report["parameters"], first.ex.exp.task.tokens_per_example(
        first.ex.exp.config.data)
    del steppers, first  # their arrays go before the next repeat's
  unit, per_step = ("tokens", c.data.batch_size * per_example) if per_example else ("examples", c.data.batch_size)
  print(f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} CPU "
        f"cores, load average {os.getloadavg()[0]:.1f} at the end; {f.config} with {f.set or 'its own settings'}: "
        f"{params:,} parameters, batch {c.data.batch_size}; {f.repeats} repeats x {f.blocks} interleaved blocks of "
        f"{f.steps} steps per variant.\n")
  print(f"| variant | compile (s), median | step (ms), median | {unit}/s | compile, each repeat (s) | "
        "step, median of each repeat's blocks (ms) |")
  print("|---|---:|---:|---:|---|---|")
  for v in variants:
    step_s = statistics.median(blocks[v])
    per_repeat = [statistics.median(blocks[v][i * f.blocks:(i + 1) * f.blocks]) for i in range(f.repeats)]
    print(f"| {v} | {statistics.median(compiles[v]):.2f} | {step_s * 1e3:.1f} | {per_step / step_s:,.0f} | "
          f"{', '.join(f'{x:.2f}' for x in compiles[v])} | {', '.join(f'{x * 1e3:.1f}' for x in per_repeat)} |")


if __name__ == "__main__":
  app.run(main)
