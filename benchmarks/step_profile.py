"""Where the milliseconds of one GPT train step go: XLA's own ops traced inside the step, and its pieces
each jitted and timed alone.

Run:  python -m benchmarks.step_profile [--config=configs/shakespeare/gpt_char.py] [--rounds=7] [--calls=20]
          [--set=model.use_bias=False]

First, the train step under `jax.profiler.trace`: its XLA ops' time split by kind (dots, elementwise
fusions, transposes and copies, reductions; a fusion counts as what is inside it), with how many of each
run a step; then each dot shape of the compiled step (lhs, rhs, dimension numbers from its HLO), timed
in the step (the trace), alone in XLA, and alone in `torch.matmul` on the same arrays, XLA and torch
taking turns `--rounds` times: the measure of how far XLA:CPU's dots are from a tuned GEMM on this CPU.

The same trace by part: every XLA op (a fusion, a dot, a reduction) is one event; each is attributed, through the op names that jax
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
import ast
import collections
import functools
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
flags.DEFINE_list("set", [], "Config overrides, key=value (a Python literal, or a bare word): model.use_bias=False.")


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


HLO_OP = re.compile(r"\s*(?:ROOT )?%(\S+) = (\S+) ([\w-]+)\(([^)]*)\)(.*)$")


def hlo_ops(hlo_text):
  """{computation: {op: (shape, opcode, operands, attributes)}} of a compiled module's text; the entry
  computation's key is "ENTRY"."""
  computations, ops = {}, None
  for line in hlo_text.splitlines():
    if head := re.match(r"(ENTRY )?%(\S+) \(.*\{$", line):
      ops = computations["ENTRY" if head.group(1) else head.group(2)] = {}
    elif ops is not None and (m := HLO_OP.match(line)):
      ops[m.group(1)] = (m.group(2), m.group(3), re.findall(r"%([\w.-]+)", m.group(4)), m.group(5))
  return computations


KINDS = ("dots", "elementwise", "transposes and copies", "reductions", "other (scatter, gather, ...)")


def kind(computations, opcode, attributes):
  """Which of KINDS an entry op is: a fusion by the ops inside it (a dot, or else a reduction, or else a
  layout change, decides), an unfused op by its opcode; None for ops that cost nothing (bitcasts, ...)."""
  if opcode == "fusion":
    inside = {op[1] for op in computations.get(re.search(r"calls=%([\w.-]+)", attributes).group(1), {}).values()}
  elif opcode in ("parameter", "constant", "bitcast", "tuple", "get-tuple-element", "after-all"):
    return None
  else:
    inside = {opcode}
  if inside & {"dot", "convolution"}:
    return "dots"
  if inside & {"reduce", "reduce-window"}:
    return "reductions"
  if inside & {"scatter", "gather", "sort", "rng", "rng-bit-generator", "while", "call", "custom-call"}:
    return KINDS[-1]
  if inside & {"transpose", "copy"}:
    return "transposes and copies"
  return "elementwise"


def traced(fn, args, calls=20):
  """(compiled entry ops {name: (shape, opcode, operands, attributes)}, all computations, {op name: ms a
  call}) of `fn(*args())`, its XLA ops' times summed over a jax.profiler trace of `calls` calls. `args()`
  gives fresh arguments (a step donates its state): all are made before the trace starts."""
  computations = hlo_ops(fn.lower(*args()).compile().as_text())
  jax.block_until_ready(fn(*args()))
  inputs = [jax.block_until_ready(args()) for _ in range(calls)]
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for a in inputs:
        jax.block_until_ready(fn(*a))
    with gzip.open(glob.glob(os.path.join(d, "**", "perfetto_trace.json.gz"), recursive=True)[0]) as f:
      events = json.load(f)
  entry, ms = computations["ENTRY"], collections.Counter()
  for e in events["traceEvents"] if isinstance(events, dict) else events:
    if e.get("ph") == "X" and e["name"] in entry:
      ms[e["name"]] += e["dur"] / 1e3 / calls
  return entry, computations, ms


def op_name(attributes):
  return m.group(1) if (m := re.search(r'op_name="([^"]*)"', attributes)) else ""


def dims(attributes, key):
  m = re.search(key + r"=\{([\d,]*)\}", attributes)
  return tuple(int(d) for d in m.group(1).split(",") if d) if m else ()


def shape_of(shape):
  return tuple(int(d) for d in re.match(r"\w+\[([\d,]*)\]", shape).group(1).split(",") if d)


def dot_shapes(entry):
  """{(lhs shape, rhs shape, dimension numbers): [op names]} of the entry computation's dots."""
  out = collections.defaultdict(list)
  for name, (shape, opcode, operands, attributes) in entry.items():
    if opcode == "dot":
      lhs, rhs = (shape_of(entry[o][0]) for o in operands[:2])
      numbers = ((dims(attributes, "lhs_contracting_dims"), dims(attributes, "rhs_contracting_dims")),
                 (dims(attributes, "lhs_batch_dims"), dims(attributes, "rhs_batch_dims")))
      out[(lhs, rhs, numbers)].append(name)
  return out


def torch_dot(torch, numbers):
  """`lax.dot_general(a, b, numbers)` as torch.matmul: the operands permuted (views) to [batch..., M, K]
  and [batch..., K, N], several free or contracting axes flattened (torch copies where it must)."""
  (lc, rc), (lb, rb) = numbers

  def matrix(x, batch, contract, lhs):
    free = [d for d in range(x.dim()) if d not in batch and d not in contract]
    sizes = [int(np.prod([x.shape[d] for d in axes])) for axes in (free, contract)]
    x = x.permute([*batch, *free, *contract] if lhs else [*batch, *contract, *free])
    return x.reshape(*x.shape[:len(batch)], *(sizes if lhs else sizes[::-1]))

  return lambda a, b: torch.matmul(matrix(a, lb, lc, True), matrix(b, rb, rc, False))


def dots_vs_torch(entry, ms, rounds, calls):
  """Each dot shape of the step: ms in the step (trace), and alone in XLA and in torch.matmul, the two
  taking turns (XLA, torch, XLA, torch, ...) `rounds` times, each `calls` calls (median of rounds)."""
  import torch
  rows = []
  for (lhs, rhs, numbers), names in dot_shapes(entry).items():
    a, b = np.random.default_rng(0).standard_normal(lhs, np.float32), np.random.default_rng(1).standard_normal(
        rhs, np.float32)
    xla = jax.jit(lambda a, b, numbers=numbers: jax.lax.dot_general(a, b, numbers))
    ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
    tdot = torch_dot(torch, numbers)
    np.testing.assert_allclose(tdot(ta, tb).numpy(), np.asarray(xla(ja, jb)), rtol=1e-3, atol=1e-3)
    contract = int(np.prod([lhs[d] for d in numbers[0][0]]))
    gflop = 2 * contract * int(np.prod(jax.eval_shape(xla, ja, jb).shape)) / 1e9
    times = {"xla": [], "torch": []}
    for _ in range(rounds):
      t = time.perf_counter()
      for _ in range(calls):
        out = xla(ja, jb)
      jax.block_until_ready(out)
      times["xla"].append((time.perf_counter() - t) / calls * 1e3)
      t = time.perf_counter()
      for _ in range(calls):
        tdot(ta, tb)
      times["torch"].append((time.perf_counter() - t) / calls * 1e3)
    in_step = statistics.mean(ms[n] for n in names)
    rows.append((lhs, rhs, numbers, len(names), gflop, in_step, statistics.median(times["xla"]),
                 statistics.median(times["torch"])))
  return rows


def print_kinds(entry, computations, ms):
  """The step's op time split into KINDS, with how many ops of each run a step."""
  total, count = collections.Counter(), collections.Counter()
  for name, (shape, opcode, operands, attributes) in entry.items():
    if (k := kind(computations, opcode, attributes)) and name in ms:
      total[k] += ms[name]
      count[k] += 1
  all_ms = sum(total.values())
  print("| kind of op | ops a step | ms a step, summed over the ops | share of the ops' time |\n|---|---:|---:|---:|")
  for k in KINDS:
    print(f"| {k} | {count[k]} | {total[k]:.2f} | {total[k] / all_ms:.1%} |")
  print(f"| all | {sum(count.values())} | {all_ms:.2f} | 100% |")
  print(f"\nnon-dot ops: {1 - total['dots'] / all_ms:.1%} of the ops' time.\n")


def print_dots(rows):
  print("| lhs | rhs | contracting / batch dims | a step | GFLOP each | in the step (ms each, trace) | XLA alone (ms) "
        "| torch.matmul (ms) | XLA / torch | XLA GFLOP/s | torch GFLOP/s |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for lhs, rhs, ((lc, rc), (lb, rb)), n, gflop, in_step, xla, torch_ms in sorted(rows, key=lambda r: -r[3] * r[6]):
    print(f"| {list(lhs)} | {list(rhs)} | {list(lc)}x{list(rc)} / {list(lb)}x{list(rb)} | {n} | {gflop:.4f} | "
          f"{in_step:.3f} | {xla:.3f} | {torch_ms:.3f} | {xla / torch_ms:.2f} | {gflop / xla * 1e3:.0f} | "
          f"{gflop / torch_ms * 1e3:.0f} |")
  step = lambda i: sum(r[3] * r[i] for r in rows)
  print(f"| all dots of a step | | | {sum(r[3] for r in rows)} | {step(4):.3f} | {step(5):.2f} (sum) | "
        f"{step(6):.2f} | {step(7):.2f} | {step(6) / step(7):.2f} | | |\n")


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
  D, H, N = model.dim, model.num_heads, model.num_layers
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

  layer("attention core (softmax(QK^T)V), x layers", N, Attend(), q_BxLxHxK, q_BxLxHxK * 0.5, q_BxLxHxK * 2)
  layer("qkv + out projections, x layers", N, Projections(), x_BxLxD)
  layer("MLP (dense, GELU, dense), x layers", N, Mlp(), x_BxLxD)
  layer("layer norm, x (2 x layers + 1)", 2 * N + 1, nn.LayerNorm(m.ln_epsilon, **kw), x_BxLxD)
  layer("embeddings + tied logits + loss", 1, EmbedAndLogits(), batch["x"], batch["y"], x_BxLxD)
  return out


def cpu_name():
  """The CPU's model name, as lscpu gives it (Linux); the platform's processor string elsewhere."""
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    import platform
    return platform.processor() or platform.machine()


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  c = importlib.import_module(f.config.removesuffix(".py").replace("/", ".")).get_config()
  for item in f.set:
    key, value = item.split("=", 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    *path, last = key.split(".")
    functools.reduce(lambda node, k: node[k], path, c)[last] = value
  trainer = Trainer(experiment.build(config_lib.resolve(c)))
  work = pieces(trainer, f.steps_per_call)
  _, step_fn, step_args, _ = work["train step, 1 per call"]
  entry, computations, ms = traced(step_fn, step_args)
  import torch
  print(f"{cpu_name()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f} at the start.\n")
  print("The train step's XLA ops, by kind (a jax.profiler trace of 20 steps; ops on both cores summed):\n")
  print_kinds(entry, computations, ms)
  print("Its dots, by shape: in the step (trace), and each alone in XLA and in torch.matmul, taking turns "
        f"({f.rounds} rounds x {f.calls} calls, medians):\n")
  print_dots(dots_vs_torch(entry, ms, f.rounds, f.calls))
  totals = collections.Counter()
  for name, op_ms in ms.items():
    totals[part(op_name(entry[name][3]), name)] += op_ms
  ops_ms = sum(totals.values())
  print("| pass | part | ms a step, summed over its XLA ops | share |\n|---|---|---:|---:|")
  for (pass_, name), part_ms in sorted(totals.items(), key=lambda kv: -kv[1]):
    print(f"| {pass_} | {name} | {part_ms:.2f} | {part_ms / ops_ms:.1%} |")
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
        f"{os.getloadavg()[0]:.1f} at the end; {f.config} {' '.join(f.set)}: batch {trainer.exp.config.data.batch_size}, "
        f"{f.rounds} rounds x {f.calls} calls, medians.\n")
  print("| piece | per step | ms each | ms a step | of the 1-per-call step |")
  print("|---|---:|---:|---:|---:|")
  for name, (count, *_rest) in work.items():
    ms = statistics.median(times[name]) * 1e3
    print(f"| {name} | {count} | {ms:.2f} | {ms * count:.2f} | {ms * count / step_ms:.0%} |")


if __name__ == "__main__":
  app.run(main)
