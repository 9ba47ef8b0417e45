"""LoRA (bigmodel/lora.py): only the factors (and the head) train, the base stays bit-identical, the
optimizer state shrinks, a run resumes bit-exactly, and reading it back merges the factors. Scanned blocks
have one pair of factors per layer and train as the loop of blocks does, resuming in either layout."""
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import AbstractMesh

from bigmodel import artifact, config as config_lib, errors, export, lora, models, optim, sharding
from bigmodel import paths as paths_lib, runs, workdir as workdir_lib
from bigmodel.models import stack
from bigmodel.train import train_and_evaluate
from conftest import gpt_config, make_trainer, random_params, tiny_config


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
  mngr = workdir_lib.checkpoints(workdir, 10)
  return mngr.restore(mngr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]["params"]


def nbytes(tree):
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
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
  base = dict(zip(*paths_lib.flatten(workdir_lib.read_weights(pretrained, None)[0])[:2]))
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
  run = runs.load(full)
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


# ---- Scanned blocks (model.scan_layers, models/stack.py): one pair of factors per layer, in either layout ----

def scan_lora_config(data_dir, corpus, scan, rank=2, **overrides):
  """A 2-block GPT on a small corpus with LoRA rank `rank` on its attention and MLP kernels, scanned or not."""
  c = gpt_config(data_dir, corpus)
  c.update(total_steps=6, log_every=1, eval_every=1000, checkpoint_every=3)
  c.model.update(num_layers=2, scan_layers=scan)
  c.optimizer.update(learning_rate=3e-2, lora=dict(rank=rank, alpha=4.0))
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c


def relayout(tree, like):
  """`tree` in the layout of tree `like` (scanned or not), through the conversion checkpoints use."""
  names, _, treedef = paths_lib.flatten(like)
  converted = stack.relayout(dict(zip(*paths_lib.flatten(jax.device_get(tree))[:2])), names)
  return jax.tree.unflatten(treedef, [converted[n] for n in names])


def train_losses(workdir):
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


@pytest.fixture(scope="module")
def scan_runs(data_dir, corpus, tmp_path_factory):
  """Workdirs of a plain pretrained run and of LoRA on it for 6 steps, unscanned ("loop") and scanned."""
  root = tmp_path_factory.mktemp("scan_lora")
  runs = {name: str(root / name) for name in ("pretrained", "loop", "scanned")}
  train_and_evaluate(scan_lora_config(data_dir, corpus, False, rank=0, total_steps=3), runs["pretrained"])
  for name, scan in (("loop", False), ("scanned", True)):
    train_and_evaluate(scan_lora_config(data_dir, corpus, scan, **{"init.checkpoint": runs["pretrained"]}),
                       runs[name])
  return runs


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_scanned_blocks_get_one_pair_of_factors_per_layer_started_as_unscanned(data_dir, corpus, scan_runs):
  """A stacked kernel (L, in, out) gets lora_a (L, in, r) and lora_b (L, r, out): A drawn as for one layer's
  kernel (and as the unscanned layout draws it), each layer's B trained apart."""
  loop, scanned = (make_trainer(scan_lora_config(data_dir, corpus, s)).state.params for s in (False, True))
  a_LxIxR, b_LxRxO = scanned["block_stack"]["mlp_in"]["lora_a"], scanned["block_stack"]["mlp_in"]["lora_b"]
  assert a_LxIxR.shape == (2, 32, 2) and b_LxRxO.shape == (2, 2, 128)
  assert scanned["block_stack"]["attn"]["qkv"]["lora_a"].shape == (2, 32, 2)
  assert 0.8 * 32 ** -0.5 < np.abs(a_LxIxR).max() <= 32 ** -0.5  # uniform in ±1/sqrt(in), in = one layer's
  assert not np.array_equal(a_LxIxR[0], a_LxIxR[1])
  factors = lambda tree: {n: x for n, x in zip(*paths_lib.flatten(tree)[:2]) if n.endswith(lora.FACTORS)}
  jax.tree.map(np.testing.assert_array_equal, factors(relayout(loop, scanned)), factors(scanned))

  trained = dict(zip(*paths_lib.flatten(saved_params(scan_runs["scanned"])["block_stack"])[:2]))
  for name in ("attn/qkv", "attn/out", "mlp_in", "mlp_out"):
    b_LxRxO = trained[f"{name}/lora_b"]
    assert np.abs(b_LxRxO[0]).max() > 0 and np.abs(b_LxRxO[0] - b_LxRxO[1]).max() > 1e-4, name  # its own B


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_scanned_and_unscanned_lora_train_alike_from_the_same_start(scan_runs):
  """The same pretrained weights (init.checkpoint) and the same factors (see above): the same losses at every
  step, the same trained factors, the same merged weights read back."""
  want, got = train_losses(scan_runs["loop"]), train_losses(scan_runs["scanned"])
  assert sorted(got) == sorted(want) == list(range(1, 7))
  np.testing.assert_allclose([got[s] for s in want], [want[s] for s in want], rtol=1e-5, atol=1e-5)
  assert want[6] < want[1] - 0.05, want  # it trained: the losses moved
  loop, scanned = saved_params(scan_runs["loop"]), saved_params(scan_runs["scanned"])
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5), relayout(scanned, loop), loop)
  # Read back merged: the same weights, in each run's own layout.
  merged_loop, merged_scanned = (workdir_lib.read_weights(scan_runs[n], None)[0] for n in ("loop", "scanned"))
  assert not lora.has_factors(merged_scanned)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5),
               relayout(merged_scanned, merged_loop), merged_loop)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
@pytest.mark.parametrize("first", ["loop", "scanned"])
def test_a_lora_run_resumes_in_the_other_layout_with_the_same_next_losses(data_dir, corpus, scan_runs, first,
                                                                         tmp_path):
  """Its step-3 checkpoint, factors and their Adam moments, resumed in the other layout to step 6."""
  resumed = str(tmp_path / "resumed")
  shutil.copytree(scan_runs[first], resumed, ignore=lambda d, names: [n for n in names if n in ("6", "metrics.jsonl")])
  train_and_evaluate(scan_lora_config(data_dir, corpus, first == "loop",
                                      **{"init.checkpoint": scan_runs["pretrained"]}), resumed)
  assert lora.has_factors(saved_params(resumed)) and ("block_stack" in saved_params(resumed)) == (first == "loop")
  want, got = train_losses(scan_runs[first]), train_losses(resumed)
  assert sorted(got) == [4, 5, 6]
  np.testing.assert_allclose([got[s] for s in got], [want[s] for s in got], rtol=1e-5, atol=1e-5)


def test_stacked_factors_keep_the_layer_axis_whole_and_each_layer_is_sharded_as_unscanned():
  mesh = AbstractMesh((1, 2, 2), sharding.AXES)
  c = config_lib.resolve(lora_config("")).optimizer.lora

  def shardings(scan):
    model = models.build(dict(name="gpt", num_outputs=50, num_layers=4, num_heads=2, dim=8, max_len=4,
                              scan_layers=scan))
    variables = jax.eval_shape(lambda: lora.LoRA(model, c, 0).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    specs = sharding.param_shardings(nn.unbox(variables)["params"], nn.get_partition_spec(variables)["params"], mesh,
                                     sharding.DEFAULTS["rules"])  # as the trainer reads them off the model's init
    return {path: s.spec for path, s in zip(*paths_lib.flatten(specs)[:2]) if path.endswith(lora.FACTORS)}

  loop, scanned = shardings(False), shardings(True)
  assert len(scanned) == 8 and {a for spec in scanned.values() for a in spec} >= {"fsdp", "tensor"}
  for path, spec in scanned.items():
    assert spec[0] is None and tuple(spec[1:]) == tuple(loop[path.replace("block_stack", "block3")]), path


@pytest.mark.slow  # ~15 s of compiling scanned blocks with dropout; test_stack's fast case covers the scan
def test_scanned_factors_compute_what_unscanned_ones_do_with_the_same_dropout_masks():
  x = jnp.array([[3, 9, 4, 1, 7, 2, 8, 5], [6, 2, 5, 8, 1, 1, 4, 0]])
  loop, scanned = (models.build(dict(name="gpt", num_outputs=11, num_layers=3, num_heads=2, dim=16, max_len=8,
                                     scan_layers=s)) for s in (False, True))
  c = config_lib.resolve(lora_config("")).optimizer.lora
  c.dropout = 0.5
  params = lora.add_factors(random_params(loop, x), c, jax.random.key(0))
  params = jax.tree.map(lambda p: p + 0.1, params)  # B off zero: the low-rank path counts
  like = jax.eval_shape(lambda: lora.add_factors(nn.unbox(scanned.init(jax.random.key(1), x))["params"], c,
                                                 jax.random.key(0)))
  stacked = relayout(params, like)
  assert stacked["block_stack"]["mlp_in"]["lora_a"].shape == (3, 16, 2)
  run = lambda model, p, train: lora.apply_fn(model.apply, c)({"params": p}, x, train=train,
                                                              rngs={"dropout": jax.random.key(2)})
  for train in (False, True):  # with train, each layer's rows of A are dropped as in the unscanned model
    np.testing.assert_allclose(run(scanned, stacked, train), run(loop, params, train), rtol=1e-5, atol=1e-5)
  assert np.abs(run(loop, params, True) - run(loop, params, False)).max() > 1e-3  # the dropout does something
