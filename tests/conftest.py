"""Shared test fixtures: one TFDS data_dir per session, tiny configs, CLI runner."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A hung collective on simulated CPU devices fails in seconds instead of hanging CI; LLVM's
# optimisations off, because the suite's tiny models spend more time compiling than running
# (a 3-layer GPT gradient compiled in 3.5-4.7 s at the default level 3, 1.9-2.3 s at 0).
XLA_TEST_FLAGS = "--xla_cpu_collective_call_terminate_timeout_seconds=10 --xla_backend_optimization_level=0"
# A flag already set wins (bigmodel.launch gives processes that wait on each other a longer timeout).
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *(
    f for f in XLA_TEST_FLAGS.split() if f.split("=")[0] not in os.environ.get("XLA_FLAGS", ""))]).strip()
# One persistent compilation cache for the whole session, CLI subprocesses included: the same
# tiny models compile once. The process that makes it (pytest's, before xdist starts its workers,
# which inherit it) removes it at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bigmodel-test-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


# Offline datasets that come from Debian packages. A test marked @pytest.mark.needs("fine_foods") skips,
# naming the install command, where its package is missing, so the README's setup and test commands
# pass on a fresh machine; under BIGMODEL_REQUIRE_DATASETS=1 (.ci/run sets it) it fails instead, so
# CI can never skip one silently.
OPTIONAL_DATASETS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
                      "apt-get install -y dataset-fashion-mnist"),
    "fine_foods": ("/usr/lib/R/site-library/modeldata/data/Rdata.rdb",
                   "apt-get install -y --no-install-recommends r-cran-modeldata"),
}


def missing_dataset(name):
  """The install command of optional dataset `name` (or of TensorFlow) if it is missing, else None."""
  if name == "tensorflow":  # preparing TFDS catalog datasets encodes with it (requirements-catalog.txt)
    import importlib.util
    return None if importlib.util.find_spec("tensorflow") else "pip install -r requirements-catalog.txt"
  path, install = OPTIONAL_DATASETS[name]
  return None if os.path.exists(path) else install


def pytest_configure(config):
  config.addinivalue_line("markers", "needs(dataset, ...): the test reads these optional offline datasets")


def pytest_runtest_setup(item):
  for mark in item.iter_markers("needs"):
    for name in mark.args:
      install = missing_dataset(name)
      if install and os.environ.get("BIGMODEL_REQUIRE_DATASETS") == "1":
        pytest.fail(f"{name} is not installed and BIGMODEL_REQUIRE_DATASETS=1: {install}", pytrace=False)
      if install:
        pytest.skip(f"{name} is not installed: {install}")


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


@pytest.fixture(scope="session")
def tiny_run(data_dir, tmp_path_factory):
  """(config, workdir) of `tiny_config` trained to its end: checkpoints at steps 20 and 40. Trained once
  per worker for the files that only read a finished run (serve it; damage, resume or evaluate a copy
  of it): read it, and copy it before changing anything in it."""
  from bigmodel.train import train_and_evaluate
  c = tiny_config(data_dir)
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  train_and_evaluate(c, workdir)
  return c, workdir


def gpt_config(data_dir, corpus, **sharding_sizes):
  """A one-layer GPT on `corpus` (see `write_corpus`), sharded with `sharding_sizes`."""
  c = tiny_config(data_dir)
  c.data = dict(name="text_files", files=(corpus,), tokenizer="char", seq_len=16, batch_size=16,
                eval_batch_size=16, eval_split="val", data_dir=data_dir)
  c.model = dict(name="gpt", num_layers=1, num_heads=4, dim=32, max_len=16)
  c.loss = "lm_xent"
  c.optimizer = dict(name="adamw", learning_rate=3e-3)
  c.sharding.update(**sharding_sizes)
  return c


def resnet_config(data_dir, **sharding_sizes):
  """The ResNet code with BatchNorm, small, on sklearn's digits."""
  c = tiny_config(data_dir)
  c.data = dict(name="digits", batch_size=32, eval_batch_size=32, data_dir=data_dir)
  c.model = dict(name="resnet18", stem="small", width=8, stage_sizes=(1, 1))
  c.optimizer = dict(name="sgd", learning_rate=0.1)
  c.sharding.update(**sharding_sizes)
  return c


def write_corpus(path):
  """400 lines of 12 words drawn from a small vocabulary: a text a tiny GPT learns in a few steps."""
  import numpy as np
  rng = np.random.default_rng(0)
  words = "the king and queen of a far land with gold and silver rivers under the hills".split()
  path.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(400)))
  return str(path)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def run_cli(*args, devices=1, timeout=300, check=True, env=None):
  """Runs `python -m <args>` in the repo root with `devices` simulated CPU devices."""
  env = dict(os.environ if env is None else env,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {XLA_TEST_FLAGS}")
  proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc


def make_trainer(config):
  """What a run of `config` trains with (state, feed, jitted steps), built without training."""
  from bigmodel import config as config_lib, experiment
  from bigmodel.train import Trainer
  return Trainer(experiment.build(config_lib.resolve(config)))


def random_params(model, x, seed=0):
  """Random parameters for `model` reading inputs like `x`, drawn on the host from the shapes alone: off
  the zero and one initial values (so every gradient is exercised), and no initialisation to compile."""
  import flax.linen as nn
  import jax
  import numpy as np
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), x))["params"])
  draw = lambda path, s: ((path[-1].key == "scale") + 0.2 * rng.standard_normal(s.shape)).astype(s.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)  # LayerNorm scales near one, the rest near zero


def outputs_and_grads(model, params, x):
  """`model`'s outputs on `x`, and the gradient of sum(sin(outputs)) in `params`: what two ways of
  computing the same model are compared on."""
  import jax
  import jax.numpy as jnp

  def loss(p):
    out = model.apply({"params": p}, x)
    return jnp.sum(jnp.sin(out)), out

  (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return out, grads


def write_jpeg_folder(root, n_per_class=(30, 6), size=40, classes=("cat", "dog"), seed=0):
  """Random-noise JPEGs of `size` px in <root>/{train,test}/<class>/ (smooth enough to compress)."""
  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(seed)
  for split, n in zip(("train", "test"), n_per_class):
    for cls in classes:
      os.makedirs(os.path.join(root, split, cls), exist_ok=True)
      for i in range(n):
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR).save(
            os.path.join(root, split, cls, f"{i:05d}.jpg"), quality=90)
  return root


def folder_run(data_dir, folder, **overrides):
  """A small CNN on the JPEG folder, streamed (memory_mb=0), flipped and cropped, checkpoints at 10 and 20."""
  from configs.image_folder import binary_cnn
  c = binary_cnn.get_config()
  c.data.update(folder=folder, image_size=16, batch_size=16, eval_batch_size=12, data_dir=data_dir, memory_mb=0,
                augment=("random_crop", "flip"), crop_padding=2)
  c.model.update(channels=(4, 8), hidden=16)
  c.update(total_steps=20, log_every=5, eval_every=20, checkpoint_every=10, keep_checkpoints=5)
  c.optimizer.warmup_steps = 2
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c


def image_shares_config(data_dir, folder):
  """folder_run streamed from its prepared shards (memory_mb=0), unaugmented and read in the process (no
  worker processes: tests/multihost_worker.py records the reads where they happen)."""
  return folder_run(data_dir, folder, **{"data.augment": (), "data.workers": 0})
