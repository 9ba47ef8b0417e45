"""LoRA (bigmodel/lora.py): only the factors (and the head) train, the base stays bit-identical, the
optimizer state shrinks, a run resumes bit-exactly, and reading it back merges the factors."""
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bigmodel import artifact, checkpoint, config as config_lib, errors, export, lora, models, optim
from bigmodel import paths as paths_lib, workdir as workdir_lib
from bigmodel.train import train_and_evaluate
from conftest import make_trainer, tiny_config


def lora_config(data_dir, **overrides):
  """A 1-block Transformer on MNIST-1D (its attn/qkv, attn/out, mlp_in and mlp_out kernels are LoRA's
  default targets), rank 2."""
  c = tiny_config(data_dir, **{"total_steps": 20, "log_every": 10, "eval_every": 20, "checkpoint_every": 10,
                               **overrides})
  c.model = dict(name="transformer", num_layers=1, num_heads=2, dim=16, mlp_dim=32, patch_size=4)
  c.optimizer = dict(name="adamw", learning_rate=1e-2, lora=dict(rank=2, alpha=4.0))
  return c


def saved_params(workdir):
  """The params of the newest checkpoint as orbax wrote them: the factors apart from their kernels."""
  mngr = checkpoint.manager(workdir, 10)
  return mngr.restore(mngr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]["params"]


def nbytes(tree):
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_lora_trains_the_factors_and_head_keeps_the_base_resumes_and_exports_merged(data_dir, tmp_path):
  """From our own checkpoint (init.checkpoint, a fresh head): see the module docstring."""
  pretrained, full, resumed = (str(tmp_path / name) for name in ("pretrained", "full", "resumed"))
  plain = lora_config(data_dir, total_steps=10)
  plain.optimizer.lora.rank = 0
  train_and_evaluate(plain, pretrained)
  c = lora_config(data_dir, **{"init.checkpoint": pretrained})
  train_and_evaluate(c, full)
  start = jax.device_get(make_trainer(c).state.params)  # the same seed: the fresh head and factors
  end = saved_params(full)
  names, before, _ = paths_lib.flatten(start)
  after = dict(zip(*paths_lib.flatten(end)[:2]))
  factors = [n for n in names if n.endswith(("lora_a", "lora_b"))]
  assert sorted(factors) == sorted(f"block0/{k}/lora_{ab}" for k in ("attn/qkv", "attn/out", "mlp_in", "mlp_out")
                                   for ab in "ab")
  base = dict(zip(*paths_lib.flatten(checkpoint.read_weights(pretrained, None)[0])[:2]))
  for name, x in zip(names, before):
    if name.startswith("head/") or name in factors:
      assert not np.array_equal(after[name], x), f"{name} did not train"
    else:  # bit-identical to the checkpoint it came from (which did train: it is not the fresh init)
      np.testing.assert_array_equal(after[name], base[name], err_msg=f"{name} is not LoRA's to change")
      assert not np.array_equal(base[name], x), name
  # Optimizer state: Adam's two moments of the factors and the head, nothing for the base.
  trained = nbytes({n: x for n, x in zip(names, before) if n in factors or n.startswith("head/")})
  report = json.load(open(os.path.join(full, "preflight.json")))["bytes_total"]
  assert 2 * trained <= report["optimizer_state"] <= 2 * trained + 64, (report, trained)
  full_tuning = config_lib.resolve(c).optimizer
  full_tuning.lora.rank = 0
  base = lora.split(start)[0]
  assert 10 * report["optimizer_state"] < nbytes(jax.eval_shape(optim.optimizer(full_tuning, 20)[0].init, base))

  # Killed after step 10: the resumed run ends bit-identical to the uninterrupted one.
  shutil.copytree(full, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "20"))
  train_and_evaluate(c, resumed)
  jax.tree.map(np.testing.assert_array_equal, saved_params(resumed), end)

  # Read back (evaluate, export, generate): the kernels hold the factors; the export computes what training did.
  run = workdir_lib.load(full)
  assert not lora.has_factors(run.params)
  export.export(full, str(tmp_path / "exported"), platforms=("cpu",))
  x_BxL = np.random.default_rng(0).normal(size=(4, 40)).astype(np.float32)
  unmerged = lora.apply_fn(models.build(run.config.model).apply, run.config.optimizer.lora)(
      {"params": end}, x_BxL)
  np.testing.assert_allclose(artifact.load(str(tmp_path / "exported"), batch_sizes=(4,)).forward(x_BxL), unmerged,
                             atol=1e-5, rtol=0)
  assert np.abs(unmerged - run.model.apply({"params": lora.split(end)[0]}, x_BxL)).max() > 1e-3  # B moved


def test_gpt2_small_at_rank_8_keeps_under_2_percent_of_full_fine_tunings_optimizer_state():
  model = models.build({"name": "gpt_small", "num_outputs": 50257})
  params = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"])
  c = config_lib.resolve(lora_config("")).optimizer
  c.lora.rank = 8
  with_factors = jax.eval_shape(lambda p: lora.add_factors(p, c.lora, jax.random.key(0)), params)
  lora_state = jax.eval_shape(optim.optimizer(c, 100)[0].init, with_factors)
  c.lora.rank = 0
  full_state = jax.eval_shape(optim.optimizer(c, 100)[0].init, params)
  assert sum(x.size for x in jax.tree.leaves(params)) == 124_439_808  # GPT-2 small, tied embeddings
  ratio = nbytes(lora_state) / nbytes(full_state)
  assert 0.005 < ratio < 0.02, ratio  # 12 blocks x (qkv, out, mlp_in, mlp_out): 1.18 M factors


def test_a_lora_config_that_cannot_work_says_why(data_dir):
  c = lora_config(data_dir)
  c.optimizer.lora.targets = ("^conv",)
  with pytest.raises(errors.UserError, match=r"optimizer.lora.targets=\('\^conv',\) matches no kernel\. Parameters: "):
    make_trainer(c)
  c = lora_config(data_dir)
  c.optimizer.freeze = ("^embed",)
  with pytest.raises(errors.UserError, match="optimizer.freeze and optimizer.lora.rank are both set"):
    make_trainer(c)
  c = lora_config(data_dir, **{"pruning.target_sparsity": 0.5, "pruning.end_step": 10})
  with pytest.raises(errors.UserError, match="pruning and LoRA do not go together"):
    make_trainer(c)
  c = lora_config(data_dir)
  c.optimizer.lora.alpha = 0.0
  with pytest.raises(errors.UserError, match=r"optimizer.lora.alpha=0.0 is out of range"):
    config_lib.resolve(c)
