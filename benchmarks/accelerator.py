"""What an accelerator does with bigmodel, in one table: the devices, a bfloat16 matmul peak, a GPT-2-small-shaped
training step, ResNet-18 on Fashion-MNIST, and an exported model answering over HTTP.

Run:    python -m benchmarks.accelerator                 # on a GPU (or TPU); --workdir keeps what it writes
Smoke:  python -m benchmarks.accelerator --tiny          # the same code paths in small sizes, on a CPU in < 1 min
Wheels for a machine that has only jax, flax, optax, orbax, torch and transformers: benchmarks/accelerator_wheels.sh.

1. Devices, and the peak FLOP/s of an n x n x n bfloat16 matmul measured in this run (best of 5).
2. A GPT with GPT-2 small's shape (12 layers, 12 heads, 768 wide, 50,257-token vocabulary, 124 M
   parameters; the char-level Shakespeare corpus as data) in bfloat16 at context 1,024, with fused
   attention (`model.attention=auto`: cuDNN's on NVIDIA GPUs) and scanned layers: the largest batch
   that fits (a power of two, from the compiled step's memory analysis at two small batches against
   the device's bytes_limit; halved if it still runs out), its compile time, tokens/s, model FLOP/s
   (6 x non-position parameters + 12 x layers x width x context per token, nanoGPT's count: XLA's
   cost analysis counts a scanned block once) and MFU against the matmul peak, and the device's peak
   memory (`memory_stats()`, where the platform has it). The step is benchmarks/train_step.py's.
3. ResNet-18 (configs/fashion_mnist/resnet18.py) trained for --resnet_epochs by bigmodel.train's own
   loop: images/s (the median of its logged rates) and test accuracy (--tiny: a narrow ResNet-10, 3 steps).
4. That run exported (bigmodel.export), served (python -m bigmodel.serve, a subprocess), and one
   real POST /v1/classify with a test image: status, label against the true one, round trip.
"""
import http.client
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from benchmarks import train_step
from bigmodel import config as config_lib, data, experiment, export, sharding
from bigmodel.data import pipeline
from bigmodel.models import attention
from bigmodel.train import Trainer, train_and_evaluate
from configs.fashion_mnist import resnet18
from configs.shakespeare import gpt_char

flags.DEFINE_bool("tiny", False, "Small sizes, for a CPU: checks the code paths, measures nothing of interest.")
flags.DEFINE_string("workdir", "", "Where the ResNet run and its export go; empty = a temporary directory.")
flags.DEFINE_integer("resnet_epochs", 3, "ResNet-18 training epochs over Fashion-MNIST's 60,000 images.")
flags.DEFINE_integer("max_batch", 512, "The largest GPT batch tried.")
# --steps (timed GPT steps) is benchmarks/train_step.py's flag.

FULL = dict(gpt=dict(num_layers=12, num_heads=12, dim=768, max_len=1024, vocab_size=50257, dtype="bfloat16"),
            seq_len=1024,
            matmul=8192, resnet=dict(), probe_batches=(4, 8), memory=None)
# --tiny sizes its batch against a pretend 24 MiB device, so that the search runs where memory_stats() has no limit,
# and computes in float32, which XLA:CPU compiles faster.
TINY = dict(gpt=dict(num_layers=2, num_heads=2, dim=32, max_len=32, vocab_size=512, dtype="float32"), seq_len=32,
            matmul=256, resnet=dict(batch_size=16, total_steps=3, width=8, stage_sizes=(1, 1, 1, 1),
                                    eval_examples=256, eval_batch_size=256),
            probe_batches=(2, 4), memory=24 * 2**20)


def gpt_config(sizes, batch):
  c = gpt_char.get_config()
  g = sizes["gpt"]
  c.model = dict(name="gpt", num_layers=g["num_layers"], num_heads=g["num_heads"], dim=g["dim"],
                 max_len=g["max_len"], vocab_size=g["vocab_size"], num_outputs=g["vocab_size"], dtype=g["dtype"],
                 attention="auto", scan_layers=True)
  c.data.update(seq_len=sizes["seq_len"], batch_size=batch, eval_batch_size=batch)
  return c


def device_memory():
  """The first device's memory_stats() (bytes_limit, peak_bytes_in_use, ...), or {} where it has none (CPU)."""
  return jax.local_devices()[0].memory_stats() or {}


def largest_batch(sizes, limit):
  """The largest power-of-two batch whose train step fits in 85 % of `limit` bytes: XLA's memory analysis of
  the step compiled (not run) for the two probe batches, extrapolated linearly (activations grow with the
  batch; weights and optimizer state do not)."""
  b0, b1 = sizes["probe_batches"]
  ex = Trainer(experiment.build(config_lib.resolve(gpt_config(sizes, b0))))
  c, dataset = ex.exp.config, ex.exp.dataset
  one = next(pipeline.train_iterator(dataset.splits[c.data.train_split], c.data, 0, dataset.norm, dataset.mask))
  one = sharding.put_batch(one, ex.mesh)

  def step_bytes(b):
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct((b, *a.shape[1:]), a.dtype, sharding=a.sharding), one)
    m = ex.train_step.lower(ex.state, batch).compile().memory_analysis()
    return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes

  at_b0, at_b1 = step_bytes(b0), step_bytes(b1)
  per_example = (at_b1 - at_b0) / (b1 - b0)
  fits = int((0.85 * limit - (at_b0 - per_example * b0)) / max(per_example, 1))
  return max(b0, min(flags.FLAGS.max_batch, 1 << max(fits, 1).bit_length() - 1))


def gpt(sizes, peak):
  """The GPT rows: batch, compile, tokens/s, model FLOP/s, MFU, peak memory."""
  limit = device_memory().get("bytes_limit", sizes["memory"])
  batch = largest_batch(sizes, limit) if limit else sizes["probe_batches"][0]
  while True:
    try:
      r = train_step.measure("gpt", flags.FLAGS.steps, gpt_config(sizes, batch))
      break
    except Exception as e:  # XLA's out-of-memory error has no type of its own
      if "RESOURCE_EXHAUSTED" not in str(e) or batch == 1:
        raise
      batch //= 2
  g = sizes["gpt"]
  params = r["params"] - g["max_len"] * g["dim"]  # the position table is looked up, not multiplied
  flops_per_token = 6 * params + 12 * g["num_layers"] * g["dim"] * sizes["seq_len"]
  flops_per_s = flops_per_token * r["items_per_s"]
  H, K = g["num_heads"], g["dim"] // g["num_heads"]
  shape = jax.ShapeDtypeStruct((batch, sizes["seq_len"], H, K), g["dtype"])
  kernel = attention.choose("auto", shape, shape)
  peak_memory = device_memory().get("peak_bytes_in_use")
  what = (f"GPT ({r['params']:,} parameters: {g['num_layers']} layers, {g['dim']} wide), {g['dtype']}, "
          f"context {sizes['seq_len']:,}, scanned layers, {kernel} attention")
  fits = f" (the largest power of two that fits in {limit / 2**30:,.2f} GiB)" if limit else " (no memory limit known)"
  return [(f"{what}: batch", f"{batch}{fits}"),
          ("  compile", f"{r['compile']:.1f} s"),
          ("  tokens/s", f"{r['items_per_s']:,.0f} (median of {flags.FLAGS.steps} steps)"),
          ("  model FLOP/s", f"{flops_per_s / 1e12:,.3g} TFLOP/s ({flops_per_token / 1e9:,.3g} GFLOP per token)"),
          ("  MFU", f"{flops_per_s / peak:.1%} of the measured bf16 matmul peak"),
          ("  peak device memory", f"{peak_memory / 2**30:,.2f} GiB" if peak_memory else "n/a (no memory_stats())")]


def resnet(sizes, workdir):
  """The ResNet rows, and the trained run's workdir."""
  c = resnet18.get_config()
  tiny = sizes["resnet"]
  c.data.batch_size = tiny.get("batch_size", c.data.batch_size)
  c.data.eval_batch_size = tiny.get("eval_batch_size", c.data.eval_batch_size)
  steps = tiny.get("total_steps") or math.ceil(flags.FLAGS.resnet_epochs * 60_000 / c.data.batch_size)
  c.total_steps, c.eval_every, c.checkpoint_every = steps, steps, steps
  c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, steps // 2)
  c.log_every = max(1, min(50, steps // 4))
  c.model.update({k: tiny[k] for k in ("width", "stage_sizes") if k in tiny})  # --tiny: a narrow ResNet-10
  if "eval_examples" in tiny:
    c.data.eval_examples = tiny["eval_examples"]
  run = os.path.join(workdir, "resnet18")
  final = train_and_evaluate(c, run)
  records = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
  rates = [r["examples_per_sec"] for r in records if r["split"] == "train"][1:] or [
      r["examples_per_sec"] for r in records if r["split"] == "train"]  # the first interval holds the compile
  epochs = steps * c.data.batch_size / 60_000
  name = "ResNet-18" if "stage_sizes" not in tiny else "ResNet-10 (--tiny)"
  return [(f"{name}, Fashion-MNIST, {steps:,} steps of {c.data.batch_size} ({epochs:.2g} epochs): images/s",
           f"{statistics.median(rates):,.0f}"),
          ("  test accuracy", f"{final['accuracy']:.2%}")], run


def served(run, workdir):
  """The export-and-serve row: one real request to `python -m bigmodel.serve` over the exported run."""
  out = os.path.join(workdir, "resnet18_export")
  export.export(run, out, platforms=("cuda" if jax.default_backend() == "gpu" else jax.default_backend(),))
  log_path = os.path.join(workdir, "serve.log")
  with open(log_path, "w") as log:
    # This process holds most of the accelerator's memory (JAX preallocates): the server takes what it uses.
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "bigmodel.serve", f"--model={out}", "--port=0", "--batch_sizes=1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
  try:
    port = None
    for _ in range(1800):  # it compiles its buckets first
      if found := re.search(r"on http://127\.0\.0\.1:(\d+)", open(log_path).read()):
        port = int(found.group(1))
        break
      if proc.poll() is not None:
        raise RuntimeError(f"bigmodel.serve exited:\n{open(log_path).read()[-3000:]}")
      time.sleep(0.1)
    test = data.load(resnet18.get_config().data).splits["test"].gather(np.arange(1))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    conn.request("POST", "/v1/classify", body=json.dumps({"input": test["x"][0].tolist()}),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    reply = json.loads(response.read())
    ms = (time.perf_counter() - start) * 1e3
  finally:
    proc.terminate()
    proc.wait()
  labels = json.load(open(os.path.join(out, "model.json")))["labels"]
  return [("Exported, served, one POST /v1/classify", f"{response.status}, label {reply.get('label')!r} (true: "
           f"{labels[int(test['y'][0])]!r}), {ms:.0f} ms round trip")]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  sizes = TINY if f.tiny else FULL
  if f.tiny and f["steps"].using_default_value:
    f.steps = 1
  workdir = f.workdir or tempfile.mkdtemp(prefix="accelerator_")
  mesh = sharding.make_mesh()
  peak = train_step.matmul_peak(mesh, sizes["matmul"], dtype=jnp.bfloat16)
  rows = [("devices", f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
                      f"jax {jax.__version__}"),
          ("bf16 matmul peak", f"{peak / 1e12:,.3g} TFLOP/s ({sizes['matmul']}^3 per device, best of 5)")]
  rows += gpt(sizes, peak)
  resnet_rows, run = resnet(sizes, workdir)
  rows += resnet_rows + served(run, workdir)
  print(f"\n{'(--tiny: small sizes, code paths only) ' if f.tiny else ''}workdir {workdir}\n")
  print("| measurement | value |\n|---|---|")
  print("\n".join(f"| {what} | {value} |" for what, value in rows))


if __name__ == "__main__":
  app.run(main)
