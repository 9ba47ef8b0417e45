"""The trainer end to end, in process: training, logs, checkpoints, resume, failures."""
import glob
import json
import os
import shutil
import time

import flax.linen as nn
import jax
import numpy as np
import pytest

from bigmodel import checkpoint, config as config_lib, models, workdir as workdir_lib
from bigmodel.train import train_and_evaluate
from conftest import tiny_config, make_trainer


def final_params(workdir, config):
  ex = make_trainer(config)
  mngr = workdir_lib.checkpoints(workdir, 10)
  state, _ = checkpoint.restore(mngr, mngr.latest_step(), ex.state, with_data=False)
  return mngr.latest_step(), jax.device_get(state.params)


def test_cnn_learns_mnist1d_and_writes_config_logs_and_checkpoints(data_dir, tmp_path):
  c = tiny_config(data_dir, total_steps=300, log_every=50, eval_every=150, checkpoint_every=100)
  final = train_and_evaluate(c, str(tmp_path))
  assert final["accuracy"] > 0.6, final  # chance is 0.1
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["model"]["name"] == "cnn1d" and saved["optimizer"]["b2"] == 0.999  # defaults filled in
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert train_steps == [50, 100, 150, 200, 250, 300]
  assert {"loss", "accuracy", "steps_per_sec", "learning_rate", "grad_norm",
          "data_wait_fraction"} <= set(records[0])
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [150, 300] and len(evals[-1]["confusion_matrix"]) == 10
  times = [r["time"] for r in records]  # wall clock, for comparing runs at equal time
  assert times == sorted(times) and time.time() - 3600 < times[0] <= times[-1] <= time.time()
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["100", "200", "300"]


def test_resumed_run_ends_with_the_same_parameters_as_an_uninterrupted_one(data_dir, tmp_path):
  c = tiny_config(data_dir, total_steps=60, checkpoint_every=20)
  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  train_and_evaluate(c, full)
  # A run killed between steps 20 and 40 leaves only checkpoint 20 behind.
  shutil.copytree(full, resumed)
  for step in ("40", "60"):
    shutil.rmtree(os.path.join(resumed, "checkpoints", step))
  train_and_evaluate(c, resumed)
  step_a, params_a = final_params(full, c)
  step_b, params_b = final_params(resumed, c)
  assert step_a == step_b == 60
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  # And it did differ from the checkpoint it resumed from, so the check has teeth.
  mngr = workdir_lib.checkpoints(full, 10)
  ex = make_trainer(c)
  at20, _ = checkpoint.restore(mngr, 20, ex.state, with_data=False)
  assert not np.array_equal(jax.device_get(at20.params)["head"]["kernel"], params_a["head"]["kernel"])


def test_only_the_newest_checkpoints_are_kept(data_dir, tmp_path):
  train_and_evaluate(tiny_config(data_dir, total_steps=50, checkpoint_every=10, keep_checkpoints=2),
                     str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == ["40", "50"]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  c = tiny_config(data_dir, total_steps=200, checkpoint_every=2, log_every=1000, divergence_factor=0.0)
  c.optimizer = dict(name="sgd", momentum=0.0, learning_rate=1e6)  # diverges in a few steps
  with pytest.raises(FloatingPointError, match=r"Loss became (nan|inf) at step (\d+)") as err:
    train_and_evaluate(c, str(tmp_path))
  bad_step = int(err.value.args[0].split("at step ")[1].split(".")[0])
  steps = sorted(map(int, os.listdir(tmp_path / "checkpoints")))
  assert steps and max(steps) < bad_step
  mngr = workdir_lib.checkpoints(str(tmp_path), 10)
  state, _ = checkpoint.restore(mngr, max(steps), make_trainer(c).state, with_data=False)
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(state.params))


def test_checkpoint_of_another_model_is_refused_with_the_parameter_names(data_dir, tiny_run, tmp_path):
  shutil.copytree(tiny_run[1], tmp_path, dirs_exist_ok=True)  # a copy: a run writes its config.json first
  other = tiny_config(data_dir)
  other.model = dict(name="cnn1d", channels=(16, 16, 16))
  with pytest.raises(ValueError, match=r"(?s)different model.*params/conv0/kernel: checkpoint has \(5, 1, 25\), "
                                       r"model wants \(5, 1, 16\)"):
    train_and_evaluate(other, str(tmp_path))
  mlp = tiny_config(data_dir)
  mlp.model = dict(name="mlp")
  with pytest.raises(ValueError, match=r"params/dense0/kernel: checkpoint has nothing"):
    train_and_evaluate(mlp, str(tmp_path))


def test_unknown_config_keys_are_rejected_with_the_valid_ones(data_dir):
  c = tiny_config(data_dir)
  c.optimizer.learning_rat = 0.1
  with pytest.raises(ValueError, match=r"optimizer\.learning_rat.*Valid keys under 'optimizer':.*learning_rate"):
    config_lib.resolve(c)
  c = tiny_config(data_dir)
  c.total_step = 5
  with pytest.raises(ValueError, match=r"Unknown config key\(s\): total_step\. Valid keys: .*total_steps"):
    config_lib.resolve(c)
  c = tiny_config(data_dir)
  c.loss = "hinge"
  with pytest.raises(ValueError, match=r"Unknown loss 'hinge'\. Known: lm_xent, mse, sigmoid_bce, softmax_xent"):
    config_lib.resolve(c)


def test_mse_regression_on_diabetes(data_dir, tmp_path):
  c = tiny_config(data_dir, total_steps=400, eval_every=400, checkpoint_every=400)
  c.data = dict(name="diabetes", batch_size=32, eval_batch_size=100, data_dir=data_dir)
  c.model = dict(name="mlp", width=32, depth=1)
  c.loss = "mse"
  c.optimizer = dict(name="adam", learning_rate=1e-2)
  final = train_and_evaluate(c, str(tmp_path))
  # Linear models reach R² ≈ 0.45-0.5 on this data; predicting the mean gives 0.
  assert final["r2"] > 0.3, final
  assert final["mse"] == pytest.approx(final["loss"])


@pytest.mark.parametrize("loss", ["sigmoid_bce", "softmax_xent"])
def test_two_class_problem_with_sigmoid_or_softmax(data_dir, tmp_path, loss):
  c = tiny_config(data_dir, total_steps=100, eval_every=100, checkpoint_every=100)
  c.data = dict(name="breast_cancer", batch_size=32, eval_batch_size=120, data_dir=data_dir)
  c.model = dict(name="mlp", width=16, depth=1)
  c.loss = loss
  c.optimizer = dict(name="adam", learning_rate=1e-2)
  ex = make_trainer(c)
  assert ex.exp.model.num_outputs == (1 if loss == "sigmoid_bce" else 2)
  final = train_and_evaluate(c, str(tmp_path))
  assert final["accuracy"] > 0.9 and np.array(final["confusion_matrix"]).shape == (2, 2), final


def test_a_registered_model_trains_through_the_same_trainer(data_dir, tmp_path):
  @models.register("test_probe")
  class Probe(nn.Module):
    num_outputs: int
    width: int = 16

    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(self.num_outputs)(nn.tanh(nn.Dense(self.width)(x.reshape(x.shape[0], -1))))

  try:
    c = tiny_config(data_dir, total_steps=100, eval_every=100)
    c.model = dict(name="test_probe", width=32)
    assert train_and_evaluate(c, str(tmp_path))["accuracy"] > 0.2
  finally:
    del models.MODELS["test_probe"]


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_steps_per_call_and_on_device_data_give_the_same_updates(data_dir, tmp_path):
  """Batches gathered on the device or fed from the host, one step or up to 7 per dispatch: the
  same run, and the calls stop at every log, eval and checkpoint step."""
  base = dict(total_steps=30, log_every=10, eval_every=15, checkpoint_every=30)
  variants = {"host, 1 per call": {"data.on_device_mb": 0, "steps_per_call": 1},
              "device, 1 per call": {"steps_per_call": 1},
              "device, 7 per call": {"steps_per_call": 7},
              "host, 7 per call": {"data.on_device_mb": 0, "steps_per_call": 7}}
  params, logged = {}, {}
  for name, overrides in variants.items():
    c = tiny_config(data_dir, **base, **overrides)
    assert (make_trainer(c).feed.device_data is None) == name.startswith("host")
    workdir = str(tmp_path / name.replace(", ", "_").replace(" ", ""))
    train_and_evaluate(c, workdir)
    params[name] = final_params(workdir, c)[1]
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    logged[name] = [(r["split"], r["step"]) for r in records]
  reference = params["host, 1 per call"]
  for name in variants:
    assert logged[name] == [("train", 10), ("train", 15), ("eval", 15), ("train", 20), ("train", 30),
                            ("eval", 30)], name
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name),
                 params[name], reference)
  init = jax.device_get(make_trainer(tiny_config(data_dir)).state.params)
  assert not np.allclose(init["head"]["kernel"], reference["head"]["kernel"], atol=1e-3)


def test_streamed_splits_and_on_device_mb_0_feed_from_the_host(data_dir):
  assert make_trainer(tiny_config(data_dir)).feed.device_data is not None
  assert make_trainer(tiny_config(data_dir, **{"data.cache": "false"})).feed.device_data is None
  assert make_trainer(tiny_config(data_dir, **{"data.on_device_mb": 0})).feed.device_data is None
