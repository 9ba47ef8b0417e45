"""Scanned blocks (model.scan_layers, models/stack.py): the same function as the loop of blocks, checkpoints that
resume in either layout, KV-cache generation, and the layer axis left unsharded."""
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh

from bigmodel import config as config_lib, generate, models, paths, sharding, starting_weights
from bigmodel import workdir as workdir_lib
from bigmodel.models import stack
from bigmodel.train import train_and_evaluate
from conftest import outputs_and_grads, random_params
from test_lm import lm_config

TOL = dict(rtol=1e-5, atol=1e-5)


def relayout(tree, like):
  """`tree` in the layout of tree `like` (scanned or not), through the conversion checkpoints use (on the
  host: numpy)."""
  names, _, treedef = paths.flatten(like)
  converted = stack.relayout(dict(zip(*paths.flatten(jax.device_get(tree))[:2])), names)
  return jax.tree.unflatten(treedef, [converted[n] for n in names])


CASES = {  # a tiny model of each family that scans, each with another remat policy, and what it reads
    "gpt": (dict(name="gpt", num_layers=2, num_heads=2, dim=32, max_len=16, remat="dots"),
            jnp.array([[3, 9, 4, 1, 7, 2, 8, 5], [6, 2, 5, 8, -1, -1, -1, -1]])),
    "bert": (dict(name="bert", num_layers=2, num_heads=2, dim=32, mlp_dim=64, max_len=16, dropout=0.0, remat="full"),
             jnp.array([[3, 9, 4, 1, 7, 2, 8, 5], [6, 2, 5, 8, -1, -1, -1, -1]])),
    "vit": (dict(name="vit", num_layers=2, num_heads=2, dim=32, mlp_dim=64, patch_size=4),
            jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))),
}


@pytest.mark.parametrize("family", [  # bert and vit (remat "full", patches) take ~25 s more: the full suite runs them
    "gpt", pytest.param("bert", marks=pytest.mark.slow), pytest.param("vit", marks=pytest.mark.slow)])
def test_scanned_blocks_compute_the_loops_outputs_and_gradients_from_converted_parameters(family):
  config, x = CASES[family]
  loop, scanned = (models.build({**config, "num_outputs": 11, "scan_layers": s}) for s in (False, True))
  params = random_params(loop, x)
  like = jax.eval_shape(lambda: nn.unbox(scanned.init(jax.random.key(1), x))["params"])
  assert "block_stack" in like or "layer_stack" in like
  stacked = relayout(params, like)

  want, want_grads = outputs_and_grads(loop, params, x)
  got, got_grads = outputs_and_grads(scanned, stacked, x)
  np.testing.assert_allclose(got, want, **TOL)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got_grads),
                          jax.tree.leaves(relayout(want_grads, like))):
    np.testing.assert_allclose(g, w, **TOL, err_msg=jax.tree_util.keystr(path))
  # Converting back gives the loop's parameters exactly.
  jax.tree.map(np.testing.assert_array_equal, relayout(stacked, params), params)


def test_kv_cache_generation_with_scanned_blocks_gives_the_loops_tokens():
  config, prompt = CASES["gpt"]
  loop, scanned = (models.build({**config, "num_outputs": 50, "scan_layers": s}) for s in (False, True))
  params = jax.tree.map(lambda p: p * 2, random_params(loop, prompt))  # clear preferences: no near-ties
  stacked = relayout(params, jax.eval_shape(lambda: nn.unbox(scanned.init(jax.random.key(1), prompt))["params"]))
  want = generate.generate(loop, params, prompt[:, :4], 10, temperature=0.0)  # (a sliding window: test_lm.py)
  got = generate.generate(scanned, stacked, prompt[:, :4], 10, temperature=0.0)
  np.testing.assert_array_equal(got, want)
  assert len(np.unique(got[:, 4:])) > 3  # not one token repeated: the check has teeth


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_a_checkpoint_resumes_in_the_other_layout_with_the_same_next_losses(data_dir, tmp_path):
  """Unscanned for 9 steps; its step-3 checkpoint resumed scanned to step 6, that resumed unscanned to 9:
  the same losses at every step. Then the unscanned run's weights start (init.checkpoint) a scanned one."""
  def config(scan, steps):
    c = lm_config(data_dir, total_steps=steps, log_every=1, eval_every=1000, checkpoint_every=3,
                  **{"data.eval_examples": 32, "data.eval_batch_size": 32})
    c.model.update(num_layers=2, dim=32, scan_layers=scan)
    return c

  def losses(workdir):
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}

  reference = str(tmp_path / "reference")
  train_and_evaluate(config(False, 9), reference)
  resumed = str(tmp_path / "resumed")
  shutil.copytree(reference, resumed, ignore=lambda d, names: [n for n in names if n in ("6", "9", "metrics.jsonl")])
  train_and_evaluate(config(True, 6), resumed)  # steps 4-6 scanned, from an unscanned checkpoint
  assert any("block_stack" in p for p in paths.flatten(workdir_lib.read_weights(resumed, None)[0])[0])
  train_and_evaluate(config(False, 9), resumed)  # steps 7-9 unscanned, from a scanned checkpoint
  want, got = losses(reference), losses(resumed)
  assert sorted(got) == list(range(4, 10))
  np.testing.assert_allclose([got[s] for s in got], [want[s] for s in got], **TOL)
  assert want[9] < want[1] - 0.3  # it trained: the losses moved

  scanned = config_lib.read(reference)
  scanned.model.scan_layers, scanned.init.checkpoint, scanned.init.reinit = True, reference, ()
  like = jax.eval_shape(lambda: nn.unbox(workdir_lib.model(scanned).init(
      jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))["params"])
  trained, _, _ = workdir_lib.read_weights(reference, None)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), like)
  loaded, _, message = starting_weights.load(scanned.init, scanned.model, zeros, {}, None)
  assert "fresh: none" in message
  jax.tree.map(np.testing.assert_array_equal, loaded, relayout(trained, like))


def test_the_layer_axis_stays_whole_and_each_layer_is_sharded_as_unscanned():
  mesh = AbstractMesh((1, 4, 2), sharding.AXES)  # 8 layers: the largest dimension, divisible by fsdp=4

  def shardings(scan):
    model = models.build(dict(name="gpt", num_outputs=50, num_layers=8, num_heads=2, dim=4, max_len=4,
                              scan_layers=scan))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    specs = sharding.param_shardings(nn.unbox(variables)["params"], nn.get_partition_spec(variables)["params"], mesh,
                                     sharding.DEFAULTS["rules"])
    return {path: s.spec for path, s in zip(*paths.flatten(specs)[:2])}

  loop, scanned = shardings(False), shardings(True)
  stacked = {p: spec for p, spec in scanned.items() if stack.is_stacked(p)}
  assert stacked and "fsdp" in {a for spec in stacked.values() for a in spec}  # the layers are sharded...
  for path, spec in stacked.items():
    assert spec[0] is None and tuple(spec[1:]) == tuple(loop[path.replace("block_stack", "block5")]), path  # ...not 0


def test_an_unknown_remat_policy_names_the_known_ones():
  config, x = CASES["gpt"]
  with pytest.raises(ValueError, match=r"Unknown model.remat='some'. Known: none, full, dots"):
    jax.eval_shape(lambda: models.build({**config, "num_outputs": 11, "remat": "some"}).init(jax.random.key(0), x))


def test_remat_dots_keeps_the_dense_layers_matmul_outputs_on_cpu(capsys):
  from jax.ad_checkpoint import print_saved_residuals
  from bigmodel import platform
  dot_general = platform.dense_dot_general()  # on CPU a custom_vjp, whose inner dot the plain policy cannot see
  dims = (((1,), (0,)), ((), ()))
  f = lambda x, a, b: jnp.sum(jnp.tanh(dot_general(jnp.tanh(dot_general(x, a, dims)), b, dims)))
  x, a, b = jnp.ones((8, 4)), jnp.ones((4, 16)), jnp.ones((16, 3))
  print_saved_residuals(jax.checkpoint(f, policy=stack.REMAT["dots"]), x, a, b)
  saved = capsys.readouterr().out.splitlines()
  assert len(saved) == 5 and [line.split()[0] for line in saved[3:]] == ["f32[8,16]", "f32[8,3]"], saved
