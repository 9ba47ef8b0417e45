"""Will it fit? The pre-flight report of a big model's train step under FSDP, before renting the devices.

Run:  python -m benchmarks.fits [--model=llama3_8b --devices=8,64,256 --seq_len=8192 --batch_per_device=1]

For each device count, in a fresh process with that many simulated CPU devices and
`sharding.fsdp=<devices>`, builds the model and its AdamW state as abstract shapes only (nothing is
allocated: an 8 B model's float32 weights alone would be 32 GB), shards them as the trainer does
(bigmodel/sharding.py), and compiles the trainer's own train step (train.train_step) for a batch of
`--batch_per_device` sequences per device. Reports what one device holds: parameters and optimizer
state (from their shardings), and XLA's temporaries for the step (its memory analysis of the compiled
step, the trainer's pre-flight). The CPU compiler's temporaries stand in for a GPU's or TPU's: they
differ by backend (fusion, remat decisions), and the CPU's attention holds every head's full
length x length scores, which a GPU's flash attention (model.attention=cudnn) does not: leave
headroom, or read them as an upper bound. No FLOP column: XLA's cost analysis counts a scanned
block's loop body once, not once per layer.
"""
import json
import os
import subprocess
import sys
import time
import types

from absl import app, flags

flags.DEFINE_string("model", "llama3_8b", "A registered model size (bigmodel/models).")
flags.DEFINE_list("devices", ["8", "64", "256"], "Device counts, each all FSDP.")
flags.DEFINE_integer("seq_len", 8192, "Tokens per sequence.")
flags.DEFINE_integer("batch_per_device", 1, "Sequences per device per step.")
flags.DEFINE_integer("vocab", 128_256, "Vocabulary (Llama 3's tokenizer).")
flags.DEFINE_string("dtype", "bfloat16", "model.dtype: activations and matmuls (weights and AdamW stay float32).")
flags.DEFINE_string("remat", "full", "model.remat: none | full | dots.")
flags.DEFINE_integer("one", 0, "Internal: report for this many devices in this process, as JSON.")
FLAGS = flags.FLAGS
GB = 2**30


def size(nbytes):
  return f"{nbytes / GB:.2f} GB" if nbytes >= GB else f"{nbytes / 2**20:.1f} MB"


def report(devices):
  """In a process with `devices` CPU devices: the pre-flight of one train step, abstract shapes only."""
  import functools

  import jax
  import jax.numpy as jnp
  import ml_collections
  from flax import linen as nn

  from bigmodel import config as config_lib, models, optim, sharding, tasks, train
  c = config_lib.resolve(ml_collections.ConfigDict(dict(
      model=dict(name=FLAGS.model, num_outputs=FLAGS.vocab, max_len=FLAGS.seq_len, scan_layers=True,
                 remat=FLAGS.remat, dtype=FLAGS.dtype),
      optimizer=dict(name="adamw", learning_rate=3e-4, schedule="warmup_cosine", warmup_steps=100),
      sharding=dict(data=1, fsdp=devices), loss="lm_xent", data=dict(name="shakespeare"))))
  model = models.build(c.model)
  tx, _ = optim.optimizer(c.optimizer, c.total_steps)
  x = jnp.zeros((1, FLAGS.seq_len), jnp.int32)

  def init_state():
    variables = nn.unbox(model.init(jax.random.key(0), x))
    return train.TrainState.create(apply_fn=model.apply, params=variables.pop("params"), tx=tx,
                                   rng=jax.random.key_data(jax.random.key(1)), model_state=variables)

  mesh = sharding.make_mesh(c.sharding)
  logical = nn.get_partition_spec(jax.eval_shape(lambda: model.init(jax.random.key(0), x)))["params"]
  abstract = jax.eval_shape(init_state)
  params_sh = sharding.param_shardings(abstract.params, logical, mesh, c.sharding.rules)
  state_sh = sharding.mirror_params(abstract, params_sh, mesh)
  state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract, state_sh)
  batch_sh = sharding.batch_sharded(mesh)
  tokens = jax.ShapeDtypeStruct((devices * FLAGS.batch_per_device, FLAGS.seq_len), jnp.int32, sharding=batch_sh)
  task = tasks.get("language_model")
  step = jax.jit(sharding.traced_on(functools.partial(train.train_step, loss_fn=task.losses["lm_xent"], task=task),
                                    mesh),
                 in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, sharding.replicated(mesh)),
                 donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, {"x": tokens, "y": tokens}).compile()
  seconds = time.perf_counter() - start
  # The trainer's own pre-flight, read off what it reads: the abstract state, its shardings, the mesh.
  trainer = types.SimpleNamespace(abstract_state=state, state_shardings=state_sh, mesh=mesh)
  print(json.dumps(train.Trainer.preflight(trainer, compiled, seconds)))


def main(argv):
  del argv
  if FLAGS.one:
    return report(FLAGS.one)
  rows = []
  for n in map(int, FLAGS.devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "benchmarks.fits", f"--one={n}",
                          *[f"--{k}={getattr(FLAGS, k)}" for k in ("model", "seq_len", "batch_per_device", "vocab",
                                                                  "dtype", "remat")]],
                         env=env, capture_output=True, text=True)
    if out.returncode:
      sys.exit(out.stderr[-3000:])
    rows.append((n, json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"{n} devices: compiled in {rows[-1][1]['compile_seconds']:.0f} s", file=sys.stderr)
  first = rows[0][1]
  print(f"{FLAGS.model}: {first['parameters']:,} parameters; AdamW, float32 weights, model.dtype={FLAGS.dtype}, "
        f"remat={FLAGS.remat}, scan_layers; {FLAGS.batch_per_device} x {FLAGS.seq_len} tokens per device per step\n")
  print("| devices (fsdp) | params / device | AdamW state / device | temporaries / device | total / device |\n"
        "|---|---|---|---|---|")
  for n, r in rows:
    b = r["bytes_per_device"]
    total = b["params"] + b["optimizer_state"] + (b["temporaries"] or 0)
    print(f"| {n} | {size(b['params'])} | {size(b['optimizer_state'])} | {size(b['temporaries'] or 0)} | "
          f"{size(total)} |")


if __name__ == "__main__":
  app.run(main)
