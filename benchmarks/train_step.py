"""Train-step speed, FLOPs, memory and MFU for a set of configs, on whatever devices JAX sees.

Run:  python -m benchmarks.train_step [--names=gpt_4x256,gpt_char,resnet18,cnn1d,gru] [--steps=20]

For each config: time to first step (building the experiment, compiling, one step), compile
time, steps/s and examples or tokens/s (median of timed steps, each blocked on), the step's
FLOPs from XLA's cost analysis, the model FLOP/s they make, and MFU: that over the peak FLOP/s
of a large float32 matmul measured on the same devices in the same run. Per-device memory
comes from the compiled step's memory analysis. The same command runs on CPU, GPU or TPU
(set --config overrides like sharding.fsdp for bigger meshes). Prints a markdown table.
"""
import importlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from bigmodel import config as config_lib, experiment, sharding
from bigmodel.data import pipeline
from bigmodel.train import Trainer


def gpt_4x256():
  """The issue's target shape: 4 layers, 256 wide, 128 x 64 = 8,192 tokens a step."""
  c = importlib.import_module("configs.shakespeare.gpt_char").get_config()
  c.model.update(name="gpt", num_layers=4, num_heads=4, dim=256, max_len=64)
  c.data.batch_size = 128
  return c


CONFIGS = {
    "gpt_4x256": gpt_4x256,
    "gpt_char": lambda: importlib.import_module("configs.shakespeare.gpt_char").get_config(),
    "resnet18": lambda: importlib.import_module("configs.fashion_mnist.resnet18").get_config(),
    "cnn1d": lambda: importlib.import_module("configs.mnist1d.cnn").get_config(),
    "gru": lambda: importlib.import_module("configs.mnist1d.gru").get_config(),
}
flags.DEFINE_list("names", list(CONFIGS), "Configs to measure.")
flags.DEFINE_integer("steps", 20, "Timed steps per config (after one warm-up step).")
flags.DEFINE_integer("matmul_size", 4096, "n for the n x n x n float32 matmul that measures the peak.")


def matmul_peak(mesh, n, repeats=5, dtype=jnp.float32):
  """FLOP/s of the best of `repeats` n x n x n matmuls in `dtype` per device, summed over the devices."""
  d = mesh.devices.size
  sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names))
  a = jax.device_put(jnp.ones((d, n, n), dtype), sh)
  f = jax.jit(lambda a: jnp.einsum("dij,djk->dik", a, a), out_shardings=sh)
  f(a).block_until_ready()
  best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
  return 2 * n ** 3 * d / best


def _timed(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


class Stepper:
  """A config's trainer with its train step compiled and one step run, and a few batches on the devices to
  time more steps with (`run`)."""

  def __init__(self, config, num_batches=8):
    start = time.perf_counter()
    self.ex = ex = Trainer(experiment.build(config_lib.resolve(config)))
    c, dataset = ex.exp.config, ex.exp.dataset
    batches = pipeline.train_iterator(dataset.splits[c.data.train_split], c.data, 0, dataset.norm, dataset.mask)
    batch = sharding.put_batch(next(batches), ex.mesh)
    t = time.perf_counter()
    self.compiled = ex.train_step.lower(ex.state, batch).compile()
    self.report = ex.preflight(self.compiled, time.perf_counter() - t)
    self.state, metrics = self.compiled(ex.state, batch)
    jax.block_until_ready(metrics)
    self.first_step = time.perf_counter() - start
    self.batches = [sharding.put_batch(next(batches), ex.mesh) for _ in range(num_batches)]

  def run(self, steps):
    """The seconds of each of `steps` more steps, each blocked on."""
    times = []
    for i in range(steps):
      t = time.perf_counter()
      self.state, metrics = self.compiled(self.state, self.batches[i % len(self.batches)])
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t)
    return times


def measure(name, steps, config=None):
  """One config's row: CONFIGS[name], or `config` (a ConfigDict) reported under `name`."""
  s = Stepper(config or CONFIGS[name](), min(steps, 8))
  ex, report, first_step = s.ex, s.report, s.first_step
  c = ex.exp.config
  step_s = float(np.median(s.run(steps)))
  flops = (report["flops_per_step_per_device"] or 0) * ex.mesh.devices.size
  tokens = ex.exp.task.tokens_per_example(c.data)
  per_step = c.data.batch_size * (tokens or 1)
  return dict(name=name, model=c.model.name, params=report["parameters"], batch=c.data.batch_size,
              unit="tokens" if tokens else "examples", first_step=first_step,
              compile=report["compile_seconds"], steps_per_s=1 / step_s, items_per_s=per_step / step_s,
              flops=flops, flops_per_s=flops / step_s, memory=report["bytes_per_device"], mesh=ex.mesh)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  results = [measure(name, f.steps) for name in f.names]
  peak = matmul_peak(results[0]["mesh"], f.matmul_size)
  mb = lambda n: f"{n / 2**20:,.1f}"
  lines = [f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
           f"{os.cpu_count()} CPU cores; matmul peak {peak / 1e9:,.1f} GFLOP/s "
           f"({f.matmul_size}^3 float32, best of 5); {f.steps} timed steps each, median.", "",
           "| config | model | params | batch | time to first step (s) | compile (s) | steps/s | "
           "examples or tokens/s | GFLOP/step | model GFLOP/s | MFU | params + opt state MB/device | "
           "temporaries MB/device |", "|---" * 13 + "|"]
  for r in results:
    m = r["memory"]
    lines.append(f"| {r['name']} | {r['model']} | {r['params']:,} | {r['batch']} | {r['first_step']:.1f} | "
                 f"{r['compile']:.1f} | {r['steps_per_s']:,.1f} | {r['items_per_s']:,.0f} {r['unit']} | "
                 f"{r['flops'] / 1e9:,.3f} | {r['flops_per_s'] / 1e9:,.1f} | {r['flops_per_s'] / peak:.0%} | "
                 f"{mb(m['params'] + m['optimizer_state'])} | {mb(m['temporaries'] or 0)} |")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
