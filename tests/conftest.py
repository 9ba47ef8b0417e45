"""Shared test fixtures: one TFDS data_dir per session, tiny configs, CLI runner."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A hung collective on simulated CPU devices fails in seconds instead of hanging CI.
XLA_TIMEOUT = "--xla_cpu_collective_call_terminate_timeout_seconds=10"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(data_dir, **overrides):
  """The MNIST-1D CNN config cut down to seconds."""
  from configs.mnist1d import cnn
  c = cnn.get_config()
  c.data.data_dir = data_dir
  c.total_steps = 40
  c.log_every = 10
  c.eval_every = 40
  c.checkpoint_every = 20
  c.keep_checkpoints = 10
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c


def run_cli(*args, devices=1, timeout=300, check=True, **popen_kwargs):
  """Runs `python -m <args>` in the repo root with `devices` simulated CPU devices."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {XLA_TIMEOUT}")
  proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc
