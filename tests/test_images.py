"""Image datasets larger than memory: a split over data.memory_mb is streamed from its files (and trains as the
held one does); image folders are prepared in parallel into uint8 shards, resumably, without TensorFlow;
training batches are decoded and augmented in worker processes, deterministic and resumable."""
import json
import os

import numpy as np

from bigmodel import data
from bigmodel.data import feed as feed_lib
from bigmodel.train import train_and_evaluate
from conftest import make_trainer, tiny_config


def losses(workdir):
  return [r["loss"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if r["split"] == "train"]


def test_a_split_over_the_memory_budget_is_streamed_says_so_and_trains_as_the_held_one(data_dir, tmp_path, capfd):
  held = tiny_config(data_dir, total_steps=20, log_every=5, eval_every=20, checkpoint_every=20,
                     **{"data.on_device_mb": 0})
  streamed = tiny_config(data_dir, total_steps=20, log_every=5, eval_every=20, checkpoint_every=20,
                         **{"data.on_device_mb": 0, "data.memory_mb": 0})
  capfd.readouterr()
  assert isinstance(data.load(held.data).splits["train"], data.InMemory)
  assert "holding train split in memory: 4,000 examples" in capfd.readouterr().err
  split = data.load(streamed.data).splits["train"]
  assert not isinstance(split, data.InMemory)  # read by index from the TFDS files
  assert "streaming train split: 4,000 examples, 0.00 GB decoded (over data.memory_mb=0)" in capfd.readouterr().err
  assert isinstance(make_trainer(streamed).feed, feed_lib.HostFeed)
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
