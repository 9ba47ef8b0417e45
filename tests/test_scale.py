"""Scale: FSDP and tensor parallelism agree with one device, the pre-flight memory report,
gradient accumulation, rematerialisation, bf16 moments, per-host input slices, compilation cache.

The 8-device runs happen in one subprocess (this file run as a script), so the simulated
device count is set before jax starts.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
import pytest
from jax.sharding import PartitionSpec as P

from bigmodel import models, sharding
from bigmodel.data import pipeline

from conftest import ROOT, XLA_TEST_FLAGS, gpt_config, make_trainer, resnet_config, run_cli

STEPS = 3


def first_steps(config, steps=STEPS):
  """Losses of the first train steps on the trainer's own batches, and the pre-flight report."""
  ex = make_trainer(config)
  batches = pipeline.train_iterator(ex.exp.dataset.splits["train"], ex.exp.config.data, 0, ex.exp.dataset.norm)
  state, losses, compiled = ex.state, [], None
  for _ in range(steps):
    batch = sharding.put_batch(next(batches), ex.mesh)
    compiled = compiled or ex.train_step.lower(state, batch).compile()
    state, metrics = compiled(state, batch)
    losses.append(float(metrics["loss"]))  # blocks: many collectives in flight deadlock on CPU
  specs = {name: str(kernel["kernel"].spec) for name, kernel in ex.state_shardings.params["block0"]["attn"].items()} \
      if "block0" in state.params else {}
  return {"losses": losses, "preflight": ex.preflight(compiled, 0.0), "specs": specs}


RUNS = [("gpt", dict(data=1, fsdp=8)), ("gpt", dict(data=2, fsdp=2, tensor=2)), ("resnet", dict(data=1, fsdp=8)),
        ("llama", dict(data=2, fsdp=2, tensor=2))]


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_fsdp_and_tensor_parallel_runs_on_8_devices_match_one_device(data_dir, corpus):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {XLA_TEST_FLAGS}",
             PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
  proc = subprocess.run([sys.executable, __file__, data_dir, corpus], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  reference = {"gpt": first_steps(gpt_config(data_dir, corpus)), "resnet": first_steps(resnet_config(data_dir)),
               "llama": first_steps(llama_config(data_dir, corpus))}
  for (model, sizes), result in zip(RUNS, results):
    np.testing.assert_allclose(result["losses"], reference[model]["losses"], rtol=2e-4, err_msg=f"{model} {sizes}")
    assert len(set(reference[model]["losses"])) == STEPS  # the steps changed something
  gpt_fsdp, gpt_3d, resnet_fsdp, llama_3d = results
  # FSDP: each device holds an eighth of the parameters and optimizer state (plus unshardable scraps).
  for r in (gpt_fsdp, resnet_fsdp):
    per_device, total = r["preflight"]["bytes_per_device"], r["preflight"]["bytes_total"]
    held = per_device["params"] + per_device["optimizer_state"]
    assert held <= 1.1 * (total["params"] + total["optimizer_state"]) / 8, r["preflight"]
  assert gpt_3d["preflight"]["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert gpt_3d["specs"]["qkv"] == str(P("fsdp", "tensor"))  # embed -> fsdp, heads -> tensor
  assert reference["gpt"]["specs"]["qkv"] == str(P(None, None))  # one device: nothing to split
  # Grouped-query attention: 4 query heads and 2 key/value heads, each split in whole heads over tensor=2.
  assert llama_3d["specs"]["q"] == llama_3d["specs"]["k"] == str(P("fsdp", "tensor")), llama_3d["specs"]
  assert llama_3d["specs"]["out"] == str(P("tensor", "fsdp"))


def llama_config(data_dir, corpus, **sharding_sizes):
  """gpt_config's, with a one-layer Llama: grouped-query attention, SwiGLU, RMSNorm."""
  c = gpt_config(data_dir, corpus, **sharding_sizes)
  c.model = dict(name="llama", num_layers=1, num_heads=4, num_kv_heads=2, dim=32, max_len=16)
  return c


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_gradient_accumulation_matches_the_whole_batch(data_dir, corpus):
  sgd = lambda c: _with(c, optimizer=dict(name="sgd", learning_rate=1.0))  # the update is the gradient
  whole = make_trainer(sgd(gpt_config(data_dir, corpus)))
  parts = make_trainer(sgd(_with(gpt_config(data_dir, corpus), micro_batches=4)))
  batch = sharding.put_batch(next(pipeline.train_iterator(
      whole.exp.dataset.splits["train"], whole.exp.config.data, 0)), whole.mesh)
  state_a, metrics_a = whole.train_step(whole.state, batch)
  state_b, metrics_b = parts.train_step(parts.state, batch)
  np.testing.assert_allclose(metrics_b["loss"], metrics_a["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics_b["accuracy"], metrics_a["accuracy"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7), state_a.params, state_b.params)


def _with(config, **top_level):
  config.update(top_level)
  return config


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_remat_lowers_the_peak_temporary_memory():
  """XLA's memory analysis of the compiled gradient, as in the pre-flight report, with and without remat."""
  x = jnp.zeros((16, 64), jnp.int32)
  temporaries = {}
  for remat in (False, True):
    # Wide enough that activations outweigh XLA:CPU's other temporaries (at dim 32 the two were equal).
    m = models.build(dict(name="gpt", num_outputs=32, num_layers=4, num_heads=2, dim=128, max_len=64, remat=remat))
    params = nn.unbox(m.init(jax.random.key(0), x[:1]))["params"]
    grad = jax.jit(jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x))))
    temporaries[remat] = grad.lower(params).compile().memory_analysis().temp_size_in_bytes
  assert temporaries[True] < temporaries[False], temporaries


def test_bf16_first_moments_halve_their_bytes(data_dir, corpus):
  c = gpt_config(data_dir, corpus)
  c.optimizer.moments_dtype = "bfloat16"
  state = make_trainer(c).state
  dtypes = {jax.tree_util.keystr(p).split(".")[-1].split("[")[0]: set() for p, _ in
            jax.tree_util.tree_flatten_with_path(state.opt_state)[0]}
  for path, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
    dtypes[jax.tree_util.keystr(path).split(".")[-1].split("[")[0]].add(x.dtype)
  assert dtypes["mu"] == {np.dtype("bfloat16")} and dtypes["nu"] == {np.dtype("float32")}, dtypes
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}  # master weights stay f32
  c.optimizer.name = "sgd"
  with pytest.raises(ValueError, match="moments_dtype is for adam and adamw"):
    make_trainer(c)


def test_each_host_reads_its_own_slice_and_together_the_whole_batch():
  for hosts in (1, 2, 4, 8):
    rows = np.concatenate([np.arange(64)[pipeline.host_slice(64, i, hosts)] for i in range(hosts)])
    np.testing.assert_array_equal(rows, np.arange(64))
  with pytest.raises(ValueError, match="must divide evenly over 3 hosts"):
    pipeline.host_slice(64, 0, 3)


@pytest.mark.parametrize("sizes, message", [
    (dict(data=3), "do not fit 1 devices"),
    (dict(data=-1, fsdp=-1), "at most one -1"),
    (dict(tensor=0), "each must be positive"),
])
def test_bad_mesh_sizes_fail_with_the_fix(sizes, message):
  c = {**sharding.DEFAULTS, **sizes}
  with pytest.raises(ValueError, match=message):
    sharding.axis_sizes(c, 1)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_a_rerun_reuses_the_persistent_compilation_cache(data_dir, tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  cache = tmp_path / ".jax_cache"
  entries = []
  for run in ("first", "second"):
    args = ("bigmodel.train", "--config=configs/mnist1d/logreg.py", f"--workdir={tmp_path / run}",
            f"--config.data.data_dir={data_dir}", "--config.total_steps=2", "--config.eval_every=2")
    run_cli(*args, env=env)
    entries.append(set(os.listdir(cache)))
    report = json.load(open(tmp_path / run / "preflight.json"))
    assert report["compile_seconds"] > 0 and report["parameters"] == 410  # 40 x 10 + 10
  assert entries[0] and entries[1] == entries[0]  # the second run compiled nothing new


if __name__ == "__main__":  # the 8-device half of the first test
  data_dir, corpus = sys.argv[1:3]
  configs = {"gpt": lambda sizes: gpt_config(data_dir, corpus, **sizes),
             "resnet": lambda sizes: resnet_config(data_dir, **sizes),
             "llama": lambda sizes: llama_config(data_dir, corpus, **sizes)}
  print(json.dumps([first_steps(configs[model](sizes)) for model, sizes in RUNS]))
