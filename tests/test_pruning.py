"""Magnitude pruning: the schedule, the masks, exclusions, resume, one-shot, and bad configs."""
import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import optax
import pytest

from bigmodel import artifact, checkpoint, export, pruning, workdir as workdir_lib
from bigmodel.train import train_and_evaluate
from conftest import tiny_config, make_trainer


def prune_config(**overrides):
  return ml_collections.ConfigDict({**pruning.DEFAULTS, **overrides})


def toy_params():
  k = jax.random.split(jax.random.key(0), 3)
  return {"dense": {"kernel": jax.random.normal(k[0], (32, 32)), "bias": jax.random.normal(k[1], (32,))},
          "head": {"kernel": jax.random.normal(k[2], (32, 4))}}


def run_sgd(c, steps, seed=1):
  """Plain SGD on random gradients (every weight keeps moving), chained with pruning; params per step."""
  tx = optax.chain(optax.sgd(0.1), pruning.magnitude_pruning(c))
  params = toy_params()
  state = tx.init(params)
  update = jax.jit(tx.update)
  history = []
  for t in range(steps):
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.fold_in(jax.random.key(seed), t), p.shape), params)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(jax.device_get(params))
  return history


def kernels_sparsity(params, names=("dense", "head")):
  zeros = sum(np.sum(params[n]["kernel"] == 0) for n in names)
  return zeros / sum(params[n]["kernel"].size for n in names)


def test_sparsity_follows_the_polynomial_schedule_and_pruned_weights_stay_zero():
  c = prune_config(target_sparsity=0.8, start_step=2, end_step=10, frequency=3)
  history = run_sgd(c, 14)
  schedule = pruning.sparsity_at(c)
  n = 32 * 32 + 32 * 4
  updated_at = [5, 8, 10]  # start + k * frequency, and end_step
  for step, params in enumerate(history, start=1):
    last_update = max([s for s in updated_at if s <= step], default=None)
    expected = 0.0 if last_update is None else round(float(schedule(last_update)) * n) / n
    assert kernels_sparsity(params) == pytest.approx(expected, abs=1e-9), step
    if step > 1:  # once pruned, a weight stays exactly zero through every later update
      was_zero = history[step - 2]["dense"]["kernel"] == 0
      assert np.all(params["dense"]["kernel"][was_zero] == 0), step
  assert kernels_sparsity(history[-1]) == pytest.approx(0.8, abs=1 / n)
  assert 0 < float(schedule(5)) < float(schedule(8)) < 0.8  # Zhu & Gupta: fast at first, then slower
  assert float(schedule(5)) > 0.8 * 3 / 8  # ...so above the straight line at 3/8 of the way
  assert np.all(history[-1]["dense"]["bias"] != 0)  # biases are out of scope by default


def test_the_mask_keeps_the_largest_magnitudes_globally_or_per_layer():
  for granularity in ("global", "per_layer"):
    c = prune_config(target_sparsity=0.5, schedule="one_shot", granularity=granularity)
    before = jax.device_get(toy_params())
    after = run_sgd(c, 1)[0]
    d, h = after["dense"]["kernel"], after["head"]["kernel"]
    if granularity == "per_layer":
      assert np.mean(d == 0) == 0.5 and np.mean(h == 0) == 0.5
    else:
      assert kernels_sparsity(after) == 0.5
      kept = np.concatenate([np.abs(d[d != 0]), np.abs(h[h != 0])])
      dense_step = before["dense"]["kernel"] - 0.1 * np.asarray(
          jax.random.normal(jax.random.fold_in(jax.random.key(1), 0), (32, 32)))
      pruned = np.abs(dense_step[d == 0])
      assert pruned.max() <= kept.min() + 1e-6  # every pruned weight was smaller than every kept one


def test_excluded_parameters_are_never_pruned_and_match_an_unpruned_run():
  c = prune_config(target_sparsity=0.9, schedule="one_shot", exclude=("^head/",))
  pruned = run_sgd(c, 3)[-1]
  assert np.mean(pruned["dense"]["kernel"] == 0) == pytest.approx(0.9, abs=1 / 1024)
  # Without pruning, SGD would give exactly these head weights and biases.
  tx = optax.sgd(0.1)
  params = toy_params()
  for t in range(3):
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.fold_in(jax.random.key(1), t), p.shape), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(pruned["head"]["kernel"], params["head"]["kernel"])
  np.testing.assert_array_equal(pruned["dense"]["bias"], params["dense"]["bias"])


@pytest.mark.slow  # two trainings (~10 s of the fast tier); the full suite runs it
def test_gradual_pruning_in_the_trainer_resumes_with_its_masks(data_dir, tmp_path):
  c = tiny_config(data_dir, total_steps=60, checkpoint_every=20, eval_every=60)
  c.pruning.update(target_sparsity=0.75, start_step=10, end_step=30, frequency=10)
  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  train_and_evaluate(c, full)
  shutil.copytree(full, resumed)  # killed between steps 20 and 40: only checkpoint 20 is left
  for step in ("40", "60"):
    shutil.rmtree(os.path.join(resumed, "checkpoints", step))
  os.remove(os.path.join(resumed, "sparsity.json"))
  train_and_evaluate(c, resumed)

  ex = make_trainer(c)
  mngr_full, mngr_resumed = workdir_lib.checkpoints(full, 10), workdir_lib.checkpoints(resumed, 10)
  restore = lambda mngr, step: jax.device_get(
      checkpoint.restore(mngr, step, ex.state, with_data=False)[0].params)
  at40, end_full, end_resumed = restore(mngr_full, 40), restore(mngr_full, 60), restore(mngr_resumed, 60)
  jax.tree.map(np.testing.assert_array_equal, end_full, end_resumed)
  for name in ("conv0", "conv1", "conv2", "head"):  # zero at step 40 (after end_step) means zero at 60
    assert np.all(end_full[name]["kernel"][at40[name]["kernel"] == 0] == 0)
    assert not np.array_equal(end_full[name]["bias"], at40[name]["bias"])  # biases kept training
  report = json.load(open(os.path.join(resumed, "sparsity.json")))
  in_scope = report["in_scope_parameters"]
  assert report["in_scope_sparsity"] == pytest.approx(0.75, abs=1 / in_scope)
  assert set(report["layers"]) == {"conv0/kernel", "conv1/kernel", "conv2/kernel", "head/kernel"}
  assert report["overall_sparsity"] < report["in_scope_sparsity"]
  # An export stores the pruned weights: the same zeros.
  export.export(full, str(tmp_path / "exported"), platforms=("cpu",))
  weights = np.load(tmp_path / "exported" / artifact.WEIGHTS)
  exported_zeros = sum(int(np.sum(weights[k] == 0)) for k in weights.files if k.endswith("kernel"))
  assert exported_zeros == round(report["in_scope_sparsity"] * in_scope)


def test_one_shot_pruning_of_a_trained_checkpoint_then_fine_tuning(data_dir, tmp_path):
  dense = str(tmp_path / "dense")
  train_and_evaluate(tiny_config(data_dir, total_steps=200, eval_every=200, checkpoint_every=200), dense)
  c = tiny_config(data_dir, total_steps=100, eval_every=100, checkpoint_every=100)
  c.init.update(checkpoint=dense, reinit=())
  c.pruning.update(target_sparsity=0.5, schedule="one_shot", granularity="per_layer")
  final = train_and_evaluate(c, str(tmp_path / "pruned"))
  report = json.load(open(tmp_path / "pruned" / "sparsity.json"))
  for path, layer in report["layers"].items():
    assert layer["sparsity"] == pytest.approx(0.5, abs=1 / layer["size"]), path
  assert final["accuracy"] > 0.5, final  # fine-tuning from the trained weights, not from scratch


@pytest.mark.parametrize("overrides, message", [
    (dict(target_sparsity=1.0), "pruning.target_sparsity=1.0 is out of range: it must be >= 0 and < 1"),
    (dict(target_sparsity=-0.1), "pruning.target_sparsity=-0.1 is out of range: it must be >= 0 and < 1"),
    (dict(target_sparsity=0.5, scope=("conv(",)), "not a valid regex"),
    (dict(target_sparsity=0.5, scope=("^attention/",)), "matches no parameter. Parameters: conv0/bias, conv0/kernel"),
    (dict(target_sparsity=0.5, end_step=500), "start_step < end_step <= total_steps"),
    (dict(target_sparsity=0.5, end_step=20, schedule="cubic"), "Known: one_shot, polynomial"),
])
def test_bad_pruning_configs_fail_with_the_fix(data_dir, overrides, message):
  c = tiny_config(data_dir)
  c.pruning.update(**{"end_step": 30, **overrides})
  with pytest.raises(ValueError) as e:
    make_trainer(c)
  assert message in str(e.value)
