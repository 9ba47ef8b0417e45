"""Where the milliseconds of one GPT train step go: XLA's own ops traced inside the step, and its pieces
each jitted and timed alone.

Run:  python -m benchmarks.step_profile [--config=configs/shakespeare/gpt_char.py] [--rounds=7] [--calls=20]

First, the forward and backward pass of the step under `jax.profiler.trace`: every XLA op (a fusion,
a dot, a reduction) is one event in the trace; each is attributed, through the op names that jax
writes into the compiled HLO, to a part of the model (attention, the MLP, layer norms, ...) and to
the forward or the backward pass, and their times are summed per part. XLA:CPU runs independent ops
on both cores at once, so the parts add up to more than the step's wall time; their shares are what
to read.

Pieces of `--config`'s train step (the real trainer's model, parameters, optimizer and batch):
the whole step one per call and `steps_per_call` per call (per step), the loss forward only, forward
and backward, the optimizer update alone, and each kind of layer forward and backward on its own
shapes (a fixed random cotangent stands in for the rest of the network), multiplied by how
many the model has. The pieces take turns round by round (A B C A B C ...), so load from other work
falls on all alike; each round times `--calls` blocked calls and keeps their median; the table
gives the median over rounds. The pieces do not add up to the step exactly: XLA fuses across their
boundaries inside the step, and each piece alone pays its own dispatch.
"""
import collections
import glob
import gzip
import importlib
import json
import os
import re
import statistics
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from bigmodel import config as config_lib, experiment, sharding
from bigmodel.models import attention, layers
from bigmodel.train import Trainer

flags.DEFINE_string("config", "configs/shakespeare/gpt_char.py", "Config file (a GPT).")
flags.DEFINE_integer("rounds", 7, "Rounds; every piece is timed once per round.")
flags.DEFINE_integer("calls", 20, "Blocked calls per piece and round (their median is the round's).")
flags.DEFINE_integer("steps_per_call", 100, "Steps per call for the looped train step.")


PARTS = (("qkv", "attention qkv projection"), ("attn/out", "attention output projection"),
         ("attn", "attention core (QK^T, mask, softmax, PV, head transposes)"), ("mlp_in", "MLP in (dense)"),
         ("mlp_out", "MLP out (dense)"), ("tanh", "GELU"), ("ln_", "layer norms"), ("embed", "embeddings"))


def part(op_name, fusion):
  """The part of the model an XLA op belongs to, from its jax op name (empty for the ops XLA adds)."""
  pass_ = "backward" if "transpose(jvp" in op_name else "forward"
  if not op_name:  # the reductions XLA's TreeReductionRewriter splits off lose their op names
    return "unnamed", fusion.rsplit(".", 1)[0]
  layer = re.sub(r"block\d+/", "", op_name)
  for key, name in PARTS:
    if key in layer:
      return pass_, name
  return pass_, "other: " + layer.rsplit("/", 1)[-1][:40]


def traced(fn, args, calls=20):
  """{(pass, part): ms a call} of `fn(*args)`'s XLA ops, summed over a jax.profiler trace of `calls` calls."""
  ops = {}
  for line in fn.lower(*args).compile().as_text().splitlines():
    if m := re.match(r"\s*(?:ROOT )?%(\S+) = \S+ [\w-]+\(", line):
      op_name = re.search(r'op_name="([^"]*)"', line)
      ops[m.group(1)] = op_name.group(1) if op_name else ""
  jax.block_until_ready(fn(*args))
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(calls):
        jax.block_until_ready(fn(*args))
    with gzip.open(glob.glob(os.path.join(d, "**", "perfetto_trace.json.gz"), recursive=True)[0]) as f:
      events = json.load(f)
  totals = collections.Counter()
  for e in events["traceEvents"] if isinstance(events, dict) else events:
    if e.get("ph") == "X" and e["name"] in ops:
      totals[part(ops[e["name"]], e["name"])] += e["dur"] / 1e3 / calls
  return totals


def fwd_bwd(module, *inputs):
  """(jitted fn, args): `module`'s parameters' and float inputs' gradients of <module(*inputs), noise>."""
  params = module.init(jax.random.key(0), *inputs)
  out = jax.eval_shape(module.apply, params, *inputs)
  noise = jax.random.normal(jax.random.key(1), out.shape, out.dtype)
  floats = [i for i, x in enumerate(inputs) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]

  def loss(params, float_inputs):
    args = list(inputs)
    for i, x in zip(floats, float_inputs):
      args[i] = x
    return jnp.vdot(module.apply(params, *args), noise)

  return jax.jit(jax.grad(loss, argnums=(0, 1))), (params, [inputs[i] for i in floats])


def pieces(trainer, steps_per_call):
  """{name: (count per step, jitted fn, args, steps per call)}."""
  ex, state = trainer.exp, trainer.state
  c, m = ex.config, ex.config.model
  feed = trainer.feed
  columns = sharding.put_batch(feed.next(1, 1), trainer.mesh)
  batch = jax.jit(lambda d, col: feed.prepare(d, jax.tree.map(lambda x: x[:, 0], col)))(feed.device_data, columns)
  many = sharding.put_batch(feed.next(steps_per_call, steps_per_call), trainer.mesh)
  n = np.int32(steps_per_call)
  B, L = batch["x"].shape
  model = ex.model
  D, H, layers = model.dim, model.num_heads, model.num_layers
  x_BxLxD = jax.random.normal(jax.random.key(2), (B, L, D))
  positions_L, valid_BxL = jnp.arange(L), jnp.ones((B, L), bool)

  def loss(params, batch):
    logits = model.apply({"params": params}, batch["x"], train=True, rngs={"dropout": jax.random.key(0)})
    return ex.task.train_sums(logits, batch["y"], ex.loss_fn)["loss"]

  grads = jax.grad(loss)(state.params, batch)
  update = jax.jit(lambda grads, opt_state, params: optax.apply_updates(
      params, trainer.tx.update(grads, opt_state, params)[0]))
  fresh = lambda: jax.tree.map(jnp.copy, state)  # the trainer's steps donate the state they are given
  out = {
      "train step, 1 per call": (1, trainer.train_step, lambda: (fresh(), batch), 1),
      f"train step, {steps_per_call} per call": (1, trainer.train_steps, lambda: (fresh(), many, n, feed.device_data),
                                                  steps_per_call),
      "forward (loss)": (1, jax.jit(loss), lambda: (state.params, batch), 1),
      "forward + backward": (1, jax.jit(jax.grad(loss)), lambda: (state.params, batch), 1),
      "optimizer update (clip, AdamW)": (1, update, lambda: (grads, state.opt_state, state.params), 1),
  }
  kw = dict(dtype=m.dtype)
  q_BxLxHxK = jax.random.normal(jax.random.key(3), (B, L, H, D // H))

  class Attend(nn.Module):  # softmax(QKᵀ)V with the causal mask: no parameters
    @nn.compact
    def __call__(self, q, k, v):
      return attention.attend(q, k, v, implementation=m.attention, causal=True)

  class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.gelu(layers.dense(4 * D, ("embed", "mlp"), nn.initializers.normal(0.02), m.dtype, "mlp_in")(x))
      return layers.dense(D, ("mlp", "embed"), nn.initializers.normal(0.02), m.dtype, "mlp_out")(h)

  class Projections(nn.Module):  # attention's qkv and output projections, attention itself left out
    @nn.compact
    def __call__(self, x):
      qkv = layers.dense(3 * D, ("embed", "heads"), nn.initializers.normal(0.02), m.dtype, "qkv")(x)
      return layers.dense(D, ("heads", "embed"), nn.initializers.normal(0.02), m.dtype, "out")(qkv[..., :D])

  class EmbedAndLogits(nn.Module):  # token + position embedding in, tied logits and the loss out
    @nn.compact
    def __call__(self, tokens, targets, h):
      embed = nn.Embed(model.vocab_size or model.num_outputs, D, name="embed")
      pos = self.param("pos_embed", nn.initializers.normal(0.02), (L, D))
      x = embed(tokens) + pos
      logits = embed.attend((x + h).astype(jnp.float32))
      return ex.loss_fn(logits, targets)

  def layer(name, count, module, *inputs):
    fn, args = fwd_bwd(module, *inputs)
    out[name] = (count, fn, lambda: args, 1)

  layer("attention core (softmax(QK^T)V), x layers", layers, Attend(), q_BxLxHxK, q_BxLxHxK * 0.5, q_BxLxHxK * 2)
  layer("qkv + out projections, x layers", layers, Projections(), x_BxLxD)
  layer("MLP (dense, GELU, dense), x layers", layers, Mlp(), x_BxLxD)
  layer("layer norm, x (2 x layers + 1)", 2 * layers + 1, nn.LayerNorm(m.ln_epsilon, **kw), x_BxLxD)
  layer("embeddings + tied logits + loss", 1, EmbedAndLogits(), batch["x"], batch["y"], x_BxLxD)
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  c = importlib.import_module(f.config.removesuffix(".py").replace("/", ".")).get_config()
  trainer = Trainer(experiment.build(config_lib.resolve(c)))
  work = pieces(trainer, f.steps_per_call)
  _, grad_fn, grad_args, _ = work["forward + backward"]
  totals = traced(grad_fn, grad_args())
  ops_ms = sum(totals.values())
  print("| pass | part | ms a step, summed over its XLA ops | share |\n|---|---|---:|---:|")
  for (pass_, name), ms in sorted(totals.items(), key=lambda kv: -kv[1]):
    print(f"| {pass_} | {name} | {ms:.2f} | {ms / ops_ms:.1%} |")
  print(f"| | all ops | {ops_ms:.2f} | 100% |\n")
  times = {name: [] for name in work}
  for name, (_, fn, args, _) in work.items():  # compile, and warm up
    jax.block_until_ready(fn(*args()))
  for _ in range(f.rounds):
    for name, (_, fn, args, per_call) in work.items():
      calls = []
      for _ in range(max(1, f.calls // per_call)):
        a = jax.block_until_ready(args())
        t = time.perf_counter()
        jax.block_until_ready(fn(*a))
        calls.append((time.perf_counter() - t) / per_call)
      times[name].append(statistics.median(calls))
  step_ms = statistics.median(times["train step, 1 per call"]) * 1e3
  print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPU cores, jax {jax.__version__}, load average "
        f"{os.getloadavg()[0]:.1f} at the end; {f.config}: batch {trainer.exp.config.data.batch_size}, "
        f"{f.rounds} rounds x {f.calls} calls, medians.\n")
  print("| piece | per step | ms each | ms a step | of the 1-per-call step |")
  print("|---|---:|---:|---:|---:|")
  for name, (count, *_rest) in work.items():
    ms = statistics.median(times[name]) * 1e3
    print(f"| {name} | {count} | {ms:.2f} | {ms * count:.2f} | {ms * count / step_ms:.0%} |")


if __name__ == "__main__":
  app.run(main)
