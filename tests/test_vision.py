"""Vision: ResNet BatchNorm, ViT, LeNet, image folders, augmentation, bf16, fine-tuning."""
import importlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from bigmodel import checkpoint, config as config_lib, data, models, workdir as workdir_lib
from bigmodel.data import dataset, pipeline
from bigmodel.train import train_and_evaluate
from conftest import run_cli, tiny_config, make_trainer

RESNET = "--config=configs/fashion_mnist/resnet18.py"


def digits_config(data_dir, model, steps=100, **data_kw):
  c = tiny_config(data_dir, total_steps=steps, eval_every=steps, checkpoint_every=steps)
  c.data = dict(name="digits", batch_size=32, eval_batch_size=120, data_dir=data_dir, **data_kw)
  c.model = model
  c.optimizer = dict(name="adam", learning_rate=3e-3)
  return c


def restored_state(workdir):
  config = ml_collections.ConfigDict(json.load(open(os.path.join(workdir, "config.json"))))
  ex = make_trainer(config)
  mngr = workdir_lib.checkpoints(workdir, 10)
  state, _ = checkpoint.restore(mngr, mngr.latest_step(), ex.state, with_data=False)
  return jax.device_get(state)


@pytest.mark.parametrize("name,count", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                        ("resnet50", 25_557_032), ("vit_ti", 5_717_416),
                                        ("vit_s", 22_050_664), ("vit_b", 86_567_656)])
def test_imagenet_sizes_have_the_papers_parameter_counts(name, count):
  model = models.build({"name": name, "num_outputs": 1000})
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))
  assert sum(p.size for p in jax.tree.leaves(shapes["params"])) == count


def test_lenet_has_lenet5s_parameter_count():
  shapes = jax.eval_shape(lambda: models.build({"name": "lenet", "num_outputs": 10}).init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1))))
  assert sum(p.size for p in jax.tree.leaves(shapes)) == 61_706


def test_batchnorm_normalises_with_the_batch_in_training_and_running_averages_in_eval():
  model = models.build({"name": "resnet18", "num_outputs": 3, "width": 8, "stem": "small",
                        "stage_sizes": (1, 1)})
  x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1)) * 3 + 5
  variables = model.init(jax.random.key(0), x, train=False)
  train_out, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  eval_out = model.apply(variables, x, train=False)
  assert not np.allclose(train_out, eval_out, atol=1e-3)
  # Training updates the running mean towards the batch mean (momentum 0.9); eval leaves it alone.
  stem_mean = updated["batch_stats"]["stem_bn"]["mean"]
  assert np.abs(stem_mean).max() > 0 and np.all(variables["batch_stats"]["stem_bn"]["mean"] == 0)
  # Once the running averages converge to this batch's statistics, eval reproduces training.
  params, stats = variables["params"], variables["batch_stats"]
  update = jax.jit(lambda stats: model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                             mutable=["batch_stats"])[1]["batch_stats"])
  for _ in range(150):
    stats = update(stats)
  np.testing.assert_allclose(model.apply({"params": params, "batch_stats": stats}, x, train=False),
                             train_out, rtol=2e-3, atol=2e-3)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_batchnorm_statistics_are_averaged_over_devices_so_1_and_8_devices_agree(data_dir, tmp_path):
  runs = {}
  for devices in (1, 8):
    workdir = str(tmp_path / f"d{devices}")
    run_cli("bigmodel.train", RESNET, f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
            "--config.data.name=digits", "--config.data.batch_size=64", "--config.data.eval_batch_size=120",
            "--config.model.width=8", "--config.model.stage_sizes=(1,1)", "--config.total_steps=12",
            "--config.optimizer.warmup_steps=2",
            "--config.log_every=1",
            "--config.eval_every=12", "--config.checkpoint_every=12", devices=devices)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    runs[devices] = ([r["loss"] for r in records if r["split"] == "train"],
                     [r["accuracy"] for r in records if r["split"] == "eval"], restored_state(workdir))
  (loss1, eval1, state1), (loss8, eval8, state8) = runs[1], runs[8]
  assert len(loss1) == 12
  np.testing.assert_allclose(loss8, loss1, rtol=1e-3)
  # Per-device statistics would differ from the global ones by far more than this.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
               state1.model_state, state8.model_state)
  np.testing.assert_allclose(eval8, eval1, atol=0.01)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_vit_pools_with_a_class_token_or_the_mean_and_rejects_ragged_patches():
  x = jnp.ones((2, 8, 8, 1))
  for pool in ("cls", "mean"):
    model = models.build({"name": "vit_ti", "num_outputs": 5, "patch_size": 4, "pool": pool,
                          "dim": 16, "num_heads": 2, "mlp_dim": 32, "num_layers": 1})
    variables = model.init(jax.random.key(0), x)
    assert model.apply(variables, x).shape == (2, 5)
    assert variables["params"]["pos_embed"].shape == ((5 if pool == "cls" else 4), 16)
    assert ("cls" in variables["params"]) == (pool == "cls")
  with pytest.raises(ValueError, match="patch_size=3"):
    models.build({"name": "vit_ti", "num_outputs": 5, "patch_size": 3}).init(jax.random.key(0), x)


def write_digit_folder(root, size=16):
  """Digits 0 and 1 from sklearn as PNGs in <root>/{train,val}/{one,zero}/, upscaled to size."""
  from sklearn.datasets import load_digits
  d = load_digits()
  keep = np.flatnonzero(d.target < 2)
  for n, i in enumerate(keep):
    split = "val" if n % 5 == 0 else "train"
    folder = os.path.join(root, split, ["zero", "one"][d.target[i]])
    os.makedirs(folder, exist_ok=True)
    img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((size, size))
    img.save(os.path.join(folder, f"{i}.png"))
  return len(keep)


def folder_config(c, folder, **kw):
  c.data = dict(name="image_folder", folder=folder, image_size=8, channels=1, batch_size=32,
                eval_batch_size=64, eval_split="val", data_dir=c.data.data_dir, **kw)
  return c


def test_image_folder_reads_resizes_and_labels_images_by_subfolder(data_dir, tmp_path):
  n = write_digit_folder(str(tmp_path / "imgs"))
  c = folder_config(tiny_config(data_dir), str(tmp_path / "imgs"))
  ds = data.load(config_lib.resolve(c).data)
  train, val = ds.splits["train"], ds.splits["val"]
  assert len(train) + len(val) == n and ds.num_classes == 2 and ds.example_shape == (8, 8, 1)
  assert train.arrays["x"].dtype == np.uint8 and set(np.unique(train.arrays["y"])) == {0, 1}
  # Class names are the sorted subfolders: "one" = 0, "zero" = 1.
  label = np.asarray(Image.open(next(
      os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "imgs" / "train" / "zero") for f in fs)).resize((8, 8)))
  assert train.arrays["y"][np.argmin(np.abs(train.arrays["x"][..., 0].astype(int) - label).sum((1, 2)))] == 1
  with pytest.raises(FileNotFoundError, match="<folder>/<split>/<class>"):
    data.load(config_lib.resolve(folder_config(tiny_config(data_dir), str(tmp_path / "missing"))).data)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
@pytest.mark.parametrize("loss", ["sigmoid_bce", "softmax_xent"])
def test_a_two_class_image_folder_trains_with_sigmoid_or_softmax(data_dir, tmp_path, loss):
  write_digit_folder(str(tmp_path / "imgs"))
  c = folder_config(digits_config(data_dir, dict(name="lenet"), steps=60), str(tmp_path / "imgs"))
  c.loss, c.data.image_size = loss, 16
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert make_trainer(c).exp.model.num_outputs == (1 if loss == "sigmoid_bce" else 2)
  assert final["accuracy"] > 0.95, final


def write_stripes_folder(root, size=16, per_class=(24, 8), seed=0):
  """Horizontal vs vertical stripes of random period, phase and brightness, with noise, as grey PNGs in
  <root>/{train,test}/{horizontal,vertical}/: both classes have the same mean brightness, so no
  pixel alone tells them apart."""
  rng = np.random.default_rng(seed)
  for split, n in zip(("train", "test"), per_class):
    for cls in ("horizontal", "vertical"):
      os.makedirs(os.path.join(root, split, cls), exist_ok=True)
      for i in range(n):
        period = rng.integers(3, 7)
        rows_S = ((np.arange(size) + rng.integers(period)) % period) < period / 2
        stripes_SxS = np.broadcast_to(rows_S[:, None], (size, size))
        img = rng.uniform(120, 255) * (stripes_SxS if cls == "horizontal" else stripes_SxS.T)
        img = np.clip(img + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, split, cls, f"{i}.png"))


BINARY_CNN = "configs/image_folder/binary_cnn.py"  # test_configs.py leaves its smoke test to the test below


def test_the_binary_cnn_config_tells_horizontal_from_vertical_stripes_in_a_folder(data_dir, tmp_path):
  """configs/image_folder/binary_cnn.py end to end on a two-class folder of PNGs: one sigmoid logit, and
  the 16 held-out images classified well above chance (1 in 4,000 by guessing for 15 of 16)."""
  write_stripes_folder(str(tmp_path / "stripes"))
  c = importlib.import_module(BINARY_CNN[:-3].replace("/", ".")).get_config()
  c.data.update(folder=str(tmp_path / "stripes"), image_size=16, batch_size=16, eval_batch_size=16, data_dir=data_dir)
  c.update(total_steps=60, log_every=20, eval_every=60, checkpoint_every=60)
  c.optimizer.warmup_steps = 10
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(c, workdir)
  assert json.load(open(os.path.join(workdir, "config.json")))["model"]["num_outputs"] == 1
  assert final["accuracy"] >= 15 / 16, final


def test_augmentation_is_random_per_batch_but_fixed_by_the_seed_and_resumes(data_dir):
  c = ml_collections.ConfigDict({**data.DEFAULTS, "name": "digits", "data_dir": data_dir, "batch_size": 64,
                                 "augment": ("random_crop", "flip"), "crop_padding": 2})
  split = data.load(c).splits["train"]
  def take(seed, n, state=None, cfg=c):
    it = pipeline.train_iterator(split, cfg, seed)
    if state is not None:
      it.set_state(state)
    return [next(it)["x"] for _ in range(n)], it.get_state()
  a, _ = take(0, 6)
  b, _ = take(0, 6)
  other, _ = take(1, 1)
  plain, _ = take(0, 1, cfg=ml_collections.ConfigDict({**c.to_dict(), "augment": ()}))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], other[0])
  assert not np.array_equal(a[0], plain[0]) and a[0].shape == plain[0].shape == (64, 8, 8, 1)
  # Crops only move pixels (plus zero padding): no image gains brightness.
  assert np.all(a[0].sum((1, 2, 3)) <= plain[0].sum((1, 2, 3)) + 1e-4)
  _, state = take(0, 2)
  resumed, _ = take(0, 4, state=state)
  for x, y in zip(a[2:], resumed):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match="Known: random_crop, flip"):
    data.load(ml_collections.ConfigDict({**c.to_dict(), "augment": ("rotate",)}))


def test_flip_mirrors_exactly_the_chosen_images():
  from bigmodel.data import augment
  x = np.random.default_rng(0).random((32, 5, 5, 2))
  y = augment.build(("flip",), 0)(x, np.random.default_rng(1))
  flipped = np.array([np.array_equal(a, b[:, ::-1]) for a, b in zip(y, x)])
  kept = np.array([np.array_equal(a, b) for a, b in zip(y, x)])
  assert np.all(flipped | kept) and 5 < flipped.sum() < 27


def test_normalize_standardises_each_channel_with_training_statistics(data_dir):
  c = ml_collections.ConfigDict({**data.DEFAULTS, "name": "digits", "data_dir": data_dir, "normalize": True,
                                 "batch_size": 1000})
  ds = data.load(c)
  x = next(pipeline.train_iterator(ds.splits["train"], c, 0, ds.norm))["x"]
  assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05


def test_normalize_statistics_of_a_large_split_come_from_all_over_it_not_its_first_classes():
  # A split in class order, as a prepared image folder is: 300 black images, then 300 white.
  x = np.concatenate([np.zeros((300, 2, 2, 3), np.uint8), np.full((300, 2, 2, 3), 255, np.uint8)])
  split = dataset.InMemory({"x": x, "y": np.repeat([0, 1], 300)})
  mean, std = pipeline.norm_stats(split, max_examples=100)
  np.testing.assert_allclose(mean, 0.5, atol=0.01)
  np.testing.assert_allclose(std, 0.5, atol=0.01)
  np.testing.assert_allclose(pipeline.norm_stats(split)[0], 0.5)  # all of a split that fits


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_bfloat16_computes_in_bf16_keeps_float32_parameters_and_learns_as_well(data_dir, tmp_path):
  accuracy = {}
  for dtype in ("float32", "bfloat16"):
    c = digits_config(data_dir, dict(name="resnet18", stem="small", width=8, stage_sizes=(1, 1), dtype=dtype), steps=150,
                      normalize=True)
    ex = make_trainer(c)
    assert {p.dtype for p in jax.tree.leaves(ex.state.params)} == {jnp.dtype("float32")}
    _, inter = ex.exp.model.apply({"params": ex.state.params, **ex.state.model_state}, jnp.ones((2, 8, 8, 1)),
                              capture_intermediates=True)
    assert inter["intermediates"]["stem_conv"]["__call__"][0].dtype == jnp.dtype(dtype)
    accuracy[dtype] = train_and_evaluate(c, str(tmp_path / dtype))["accuracy"]
  assert accuracy["float32"] > 0.85 and abs(accuracy["bfloat16"] - accuracy["float32"]) < 0.05, accuracy


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_fine_tuning_loads_the_backbone_by_name_with_a_new_head_and_frozen_layers(data_dir, tmp_path):
  model = dict(name="resnet18", stem="small", width=8, stage_sizes=(1, 1, 1, 1))
  pretrain = str(tmp_path / "pretrain")
  train_and_evaluate(digits_config(data_dir, model, steps=60), pretrain)
  pretrained = restored_state(pretrain)
  write_digit_folder(str(tmp_path / "imgs"))
  c = folder_config(digits_config(data_dir, model, steps=30), str(tmp_path / "imgs"))
  c.init = dict(checkpoint=pretrain)
  c.optimizer.freeze = ("^stem_", "^stage[0-2]_")
  final = train_and_evaluate(c, str(tmp_path / "finetune"))
  tuned = restored_state(str(tmp_path / "finetune"))
  assert tuned.params["head"]["kernel"].shape == (64, 2) and final["accuracy"] > 0.9
  np.testing.assert_array_equal(tuned.params["stage1_block0"]["conv0"]["kernel"],
                                pretrained.params["stage1_block0"]["conv0"]["kernel"])  # frozen
  assert not np.allclose(tuned.params["stage3_block0"]["conv1"]["kernel"],
                         pretrained.params["stage3_block0"]["conv1"]["kernel"])  # loaded, then trained
  # Keeping the old 10-class head cannot fit 2 classes: the error names it and the fix.
  c.init.reinit = ()
  with pytest.raises(ValueError, match=r"head/kernel: checkpoint has \(64, 10\), this model \(64, 2\)[\s\S]*init.reinit"):
    train_and_evaluate(c, str(tmp_path / "mismatch"))


def test_a_freeze_pattern_that_matches_nothing_is_an_error(data_dir, tmp_path):
  c = digits_config(data_dir, dict(name="cnn2d"), steps=10)
  c.optimizer.freeze = ("^conv9",)
  with pytest.raises(ValueError, match="matches no parameter.*conv0/kernel"):
    make_trainer(c)
