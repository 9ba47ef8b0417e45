"""The command lines in separate processes: overrides, evaluate, signals, 8 devices."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bigmodel import errors

from conftest import ROOT, XLA_TEST_FLAGS, run_cli

CNN = "--config=configs/mnist1d/cnn.py"


def small(data_dir, **kw):
  flags = {**dict(total_steps=60, log_every=10, eval_every=60, checkpoint_every=30), **kw}
  return [f"--config.data.data_dir={data_dir}"] + [f"--config.{k}={v}" for k, v in flags.items()]


def test_train_cli_applies_overrides_and_evaluate_cli_reports_the_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  out = run_cli("bigmodel.train", CNN, f"--workdir={workdir}", "--config.optimizer.learning_rate=3e-3",
                *small(data_dir))
  final = json.loads(out.stdout.strip().splitlines()[-1])
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["optimizer"]["learning_rate"] == 3e-3 and saved["total_steps"] == 60
  assert "steps_per_s" in out.stderr  # the progress bar
  assert re.search(r"first step done \d+\.\d s after start", out.stderr)  # benchmarks/vs_pytorch.py reads it
  ev = run_cli("bigmodel.evaluate", f"--workdir={workdir}")
  assert "confusion matrix" in ev.stdout and "f1_macro" in ev.stdout
  report = json.load(open(os.path.join(workdir, "eval.json")))
  assert report["step"] == 60
  assert report["accuracy"] == final["accuracy"]  # same checkpoint, same numbers
  assert np.array(report["confusion_matrix"]).sum() == 1000


@pytest.mark.slow  # a CLI process (~8 s); test_failures' in-process checks refuse typos in the fast tier
def test_unknown_override_key_fails_at_start(data_dir, tmp_path):
  out = run_cli("bigmodel.train", CNN, f"--workdir={tmp_path}", "--config.optimizer.learnin_rate=1",
                check=False)
  assert out.returncode != 0 and "learnin_rate" in out.stderr
  out = run_cli("bigmodel.train", CNN, f"--workdir={tmp_path}", "--config.model.name=resnet81",
                f"--config.data.data_dir={data_dir}", check=False)
  assert out.returncode != 0 and "Unknown model 'resnet81'. Known: " in out.stderr


def start(data_dir, workdir, **kw):
  env = dict(os.environ, XLA_FLAGS=XLA_TEST_FLAGS)
  args = [sys.executable, "-m", "bigmodel.train", CNN, f"--workdir={workdir}",
          *small(data_dir, **{"total_steps": 1_000_000, "checkpoint_every": 200, "log_every": 20,
                        "eval_every": 1_000_000, **kw})]
  return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(workdir, step, proc, timeout=240):
  path = os.path.join(workdir, "checkpoints", str(step))
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline, "no checkpoint appeared"
    time.sleep(0.05)


@pytest.mark.slow  # a CLI training killed by SIGTERM (~10 s of the fast tier); the full suite runs it
def test_sigterm_saves_a_checkpoint_before_exiting(data_dir, tmp_path):
  workdir = str(tmp_path)
  proc = start(data_dir, workdir)
  wait_for_checkpoint(workdir, 200, proc)
  time.sleep(0.5)  # stop somewhere between checkpoints
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == errors.RESUMABLE == 75, err[-3000:]  # not finished: a scheduler requeues it
  said = re.search(r"SIGTERM: saved a checkpoint at step (\d+);", err)
  assert said, err[-3000:]
  step = int(said.group(1))
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert steps[-1] == step and step > 200


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_sigkill_loses_at_most_one_checkpoint_interval_and_the_run_resumes(data_dir, tmp_path):
  workdir = str(tmp_path)
  proc = start(data_dir, workdir, checkpoint_every=100)
  wait_for_checkpoint(workdir, 300, proc)
  proc.kill()
  proc.communicate()
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  logged = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert max(logged) - steps[-1] < 100  # work lost: less than one interval
  out = run_cli("bigmodel.train", CNN, f"--workdir={workdir}",
                *small(data_dir, total_steps=steps[-1] + 20, checkpoint_every=100, log_every=20))
  assert f"Resumed from step {steps[-1]}" in out.stderr
  assert json.loads(out.stdout.strip().splitlines()[-1])["accuracy"] > 0.3


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_eight_devices_give_the_same_losses_as_one(data_dir, tmp_path):
  losses = {}
  for devices in (1, 8):
    workdir = str(tmp_path / f"d{devices}")
    out = run_cli("bigmodel.train", CNN, f"--workdir={workdir}", "--config.data.batch_size=64",
                  "--config.data.eval_batch_size=200",
                  *small(data_dir, total_steps=30, log_every=1, eval_every=30), devices=devices)
    assert f"{devices} device(s)" in out.stderr
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    losses[devices] = np.array([r["loss"] for r in records if r["split"] == "train"])
    losses[f"eval{devices}"] = [r["accuracy"] for r in records if r["split"] == "eval"]
  assert len(losses[1]) == 30 and losses[1][-1] < losses[1][0]
  np.testing.assert_allclose(losses[8], losses[1], rtol=2e-4)
  np.testing.assert_allclose(losses["eval8"], losses["eval1"], atol=0.002)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_the_installed_package_trains_a_config_from_any_directory(tmp_path):
  """`pip install -e .` (requirements-test.txt does it) makes bigmodel and its configs importable anywhere."""
  import importlib.metadata
  try:
    importlib.metadata.distribution("bigmodel")
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("bigmodel is not installed: pip install -e . (the README's setup command does it)")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = subprocess.run([sys.executable, "-m", "bigmodel.train", f"--config={ROOT}/configs/mnist1d/mlp.py",
                         "--workdir=run", "--config.total_steps=3", f"--config.data.data_dir={tmp_path / 'tfds'}"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"] >= 0
  assert os.path.exists(tmp_path / "run" / "config.json")
