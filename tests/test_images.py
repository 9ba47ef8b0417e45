"""Image datasets larger than memory: a split over data.memory_mb is streamed from its files (and trains as the
held one does); image folders are prepared in parallel into uint8 shards, resumably, without TensorFlow;
training batches are decoded and augmented in worker processes, deterministic and resumable."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from bigmodel import data
from bigmodel.data import feed as feed_lib, image_folder, pipeline
from bigmodel.train import train_and_evaluate
from conftest import ROOT, folder_run, make_trainer, run_cli, tiny_config, write_jpeg_folder


def losses(workdir):
  return [r["loss"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if r["split"] == "train"]


def test_a_split_over_the_memory_budget_is_streamed_and_the_run_says_so(data_dir, capfd):
  capfd.readouterr()
  assert isinstance(data.load(tiny_config(data_dir).data).splits["train"], data.InMemory)
  assert "holding train split in memory: 4,000 examples" in capfd.readouterr().err
  streamed = tiny_config(data_dir, **{"data.memory_mb": 0})
  assert not isinstance(data.load(streamed.data).splits["train"], data.InMemory)  # read by index from the files
  assert "streaming train split: 4,000 examples, 0.00 GB decoded (over data.memory_mb=0)" in capfd.readouterr().err
  assert isinstance(make_trainer(streamed).feed, feed_lib.HostFeed)


@pytest.mark.slow
def test_a_streamed_split_trains_to_the_same_losses_as_the_held_one(data_dir, tmp_path):
  held = tiny_config(data_dir, total_steps=20, log_every=5, eval_every=20, checkpoint_every=20,
                     **{"data.on_device_mb": 0})
  streamed = tiny_config(data_dir, total_steps=20, log_every=5, eval_every=20, checkpoint_every=20,
                         **{"data.on_device_mb": 0, "data.memory_mb": 0})
  assert not isinstance(data.load(streamed.data).splits["train"], data.InMemory)
  train_and_evaluate(held, str(tmp_path / "held"))
  train_and_evaluate(streamed, str(tmp_path / "streamed"))
  np.testing.assert_allclose(losses(tmp_path / "streamed"), losses(tmp_path / "held"), rtol=1e-6)
  assert len(losses(tmp_path / "held")) == 4


def test_an_explicit_cache_wins_over_the_budget(data_dir, capfd):
  c = tiny_config(data_dir, **{"data.memory_mb": 0, "data.cache": "True"})
  assert isinstance(data.load(c.data).splits["train"], data.InMemory)
  assert "(data.cache=True)" in capfd.readouterr().err
  c = tiny_config(data_dir, **{"data.cache": "false"})
  assert not isinstance(data.load(c.data).splits["train"], data.InMemory)


def folder_files(directory):
  return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


def test_an_image_folder_is_prepared_into_uint8_shards_by_workers_without_tensorflow(tmp_path):
  """Prepared in a fresh interpreter: the pixels are PIL's resize of each file, labels by sorted class folder,
  and neither TensorFlow nor TFDS was imported (the old TFDS builder imported both)."""
  folder = write_jpeg_folder(str(tmp_path / "pets"))
  code = f"""
import sys, json
from bigmodel import config as config_lib
from bigmodel.data import image_folder
c = config_lib.resolve(__import__("ml_collections").ConfigDict(dict(
    model=dict(name="cnn2d"), data=dict(name="image_folder", folder={folder!r}, image_size=16,
                                        data_dir={str(tmp_path / 'dd')!r}, workers=2, memory_mb=0))))
from bigmodel import data
ds = data.load(c.data)
print(json.dumps(dict(tf=[m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules],
                      n=len(ds.splits["train"]), classes=ds.label_names, shape=ds.example_shape)))
"""
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert got == {"tf": [], "n": 60, "classes": ["cat", "dog"], "shape": [16, 16, 3]}, got
  assert "streaming train split: 60 examples" in proc.stderr
  directory = glob.glob(str(tmp_path / "dd" / "image_folder" / "pets_*"))[0]
  manifest = image_folder.open_prepared(directory)
  split = image_folder.ImageShards(directory, manifest, "train")
  batch = split.gather(np.array([31, 0, 59]))
  np.testing.assert_array_equal(batch["y"], [1, 0, 1])
  want = Image.open(os.path.join(folder, "train", "dog", "00001.jpg"))
  want.draft("RGB", (16, 16))
  want = want.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR)
  np.testing.assert_array_equal(batch["x"][0], np.asarray(want))


def test_normalisation_statistics_are_counted_while_the_folder_is_prepared_and_a_subset_takes_its_own(
    data_dir, tmp_path, monkeypatch):
  """data.normalize's mean and std of a prepared folder: those of every training pixel, from the byte counts its
  manifest keeps, with no image read again; a data.train_examples subset gets the subset's."""
  folder = write_jpeg_folder(str(tmp_path / "pets"))
  c = folder_run(data_dir, folder, **{"data.normalize": True, "data.data_dir": str(tmp_path / "dd")})
  with monkeypatch.context() as m:
    m.setattr(pipeline, "norm_stats", lambda split: pytest.fail("the statistics were read from the images"))
    ds = data.load(c.data)
    pixels = ds.splits["train"].gather(np.arange(60))["x"].reshape(-1, 3) / 255.0
  np.testing.assert_allclose(ds.norm[0], pixels.mean(0), rtol=1e-6)
  np.testing.assert_allclose(ds.norm[1], pixels.std(0) + 1e-6, rtol=1e-5)
  subset = data.load(folder_run(data_dir, folder, **{"data.normalize": True, "data.data_dir": str(tmp_path / "dd"),
                                                      "data.train_examples": 10}).data)
  chosen = subset.splits["train"].gather(np.arange(10))["x"].reshape(-1, 3) / 255.0
  np.testing.assert_allclose(subset.norm[0], chosen.mean(0), rtol=1e-6)


def test_a_corrupt_image_stops_preparation_with_one_error_line_naming_it(tmp_path):
  folder = write_jpeg_folder(str(tmp_path / "pets"), n_per_class=(8, 2))
  bad = os.path.join(folder, "train", "dog", "00003.jpg")
  with open(bad, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
  proc = run_cli("bigmodel.prepare_images", f"--folder={folder}", "--image_size=16", "--workers=2",
                 f"--data_dir={tmp_path / 'dd'}", "--shard_mb=0.002", check=False, timeout=120)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and bad in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
def test_a_sigkilled_preparation_rerun_keeps_finished_shards_and_ends_byte_identical(tmp_path):
  folder = write_jpeg_folder(str(tmp_path / "pets"), n_per_class=(300, 40), size=64)
  args = ["bigmodel.prepare_images", f"--folder={folder}", "--image_size=48", "--workers=2", "--shard_mb=0.1"]
  run_cli(*args, f"--data_dir={tmp_path / 'whole'}")
  (whole,) = glob.glob(str(tmp_path / "whole" / "image_folder" / "pets_*"))
  want = folder_files(whole)
  assert len([n for n in want if n.endswith(".bin")]) > 20
  killed_root = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", *args, f"--data_dir={killed_root}"], cwd=ROOT,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
  shards = lambda: glob.glob(str(killed_root / "image_folder" / "pets_*" / "*.bin"))
  start = time.time()
  while len(shards()) < 5:
    assert proc.poll() is None and time.time() - start < 120, proc.communicate()[1][-3000:]
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)  # the workers too
  proc.wait()
  kept = {p: os.stat(p).st_mtime_ns for p in shards()}
  assert len(kept) < len([n for n in want if n.endswith(".bin")])
  assert not glob.glob(str(killed_root / "image_folder" / "pets_*" / "manifest.json"))
  run_cli(*args, f"--data_dir={killed_root}")
  (killed,) = glob.glob(str(killed_root / "image_folder" / "pets_*"))
  assert folder_files(killed) == want
  assert all(os.stat(p).st_mtime_ns == t for p, t in kept.items())  # finished shards were not written again


@pytest.mark.slow
def test_training_batches_of_a_streamed_split_are_made_in_worker_processes_the_same_as_in_threads(data_dir, tmp_path):
  import psutil
  folder = write_jpeg_folder(str(tmp_path / "pets"))
  batches = {}
  for workers in (0, 2):
    c = folder_run(data_dir, folder, **{"data.workers": workers})
    ex = make_trainer(c)
    children = set(psutil.Process().children(recursive=True))
    columns = ex.feed.next(3, 3)
    made = set(psutil.Process().children(recursive=True)) - children
    assert len(made) >= workers, (workers, made)  # grain's worker processes
    batches[workers] = columns
  for k in ("x", "y"):
    np.testing.assert_array_equal(batches[0][k], batches[2][k])


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_with_worker_processes_ends_bit_identical(data_dir, tmp_path):
  """60 images in batches of 16: the checkpoint at step 10 is inside the third epoch. Resumed from it (a real
  orbax checkpoint, workers restarted from the saved position), the run ends with the uninterrupted one's
  parameters and losses exactly."""
  import shutil
  from bigmodel import workdir as workdir_lib
  folder = write_jpeg_folder(str(tmp_path / "pets"))
  c = folder_run(data_dir, folder, **{"data.workers": 2})
  ex = make_trainer(c).exp
  assert pipeline.worker_count(ex.dataset, ex.dataset.splits["train"], c.data) == 2
  full, resumed = tmp_path / "full", tmp_path / "resumed"
  train_and_evaluate(c, str(full))
  shutil.copytree(full, resumed)
  shutil.rmtree(resumed / "checkpoints" / "20")
  with open(resumed / "metrics.jsonl") as f:  # the resumed run logs steps 15 and 20 again
    kept = [line for line in f if json.loads(line)["step"] <= 10]
  with open(resumed / "metrics.jsonl", "w") as f:
    f.writelines(kept)
  train_and_evaluate(c, str(resumed))
  a, _, step_a = workdir_lib.read_weights(str(full), None)
  b, _, step_b = workdir_lib.read_weights(str(resumed), None)
  assert step_a == step_b == 20
  import jax
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert losses(resumed) == losses(full)


IMAGENET = ["configs/imagenet/resnet50.py", "configs/imagenet/vit_b16.py"]  # test_configs.py leaves them to this


@pytest.mark.slow
@pytest.mark.parametrize("path", IMAGENET)
def test_the_imagenet_recipes_train_two_steps_on_a_small_folder(data_dir, tmp_path, path):
  """The ResNet-50 and ViT-B/16 recipes as written (model, optimizer, augmentations, streaming), on 32-px images."""
  import importlib
  c = importlib.import_module(path[:-3].replace("/", ".")).get_config()
  c.data.update(folder=write_jpeg_folder(str(tmp_path / "pets")), image_size=32, eval_split="test", batch_size=8,
                eval_batch_size=12, data_dir=data_dir, crop_padding=2, workers=2, memory_mb=0)
  c.update(total_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  c.optimizer.warmup_steps = 1
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert np.isfinite(final["loss"]) and 0 <= final["accuracy"] <= 1, final
  assert len(losses(tmp_path / "run")) == 2


def test_a_config_mistake_is_reported_before_the_folder_is_prepared(data_dir, tmp_path):
  """The issue's command had warmup >= total_steps; it was reported after preparing and loading the folder."""
  folder = write_jpeg_folder(str(tmp_path / "pets"), n_per_class=(4, 2))
  c = folder_run(str(tmp_path / "dd"), folder)
  c.optimizer.warmup_steps = c.total_steps
  with pytest.raises(ValueError, match="warmup_steps=20 must be below total_steps=20"):
    train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "dd" / "image_folder")  # nothing was prepared
