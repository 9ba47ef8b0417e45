"""Data: TFDS builders offline, deterministic resumable batches, epochs, eval padding."""
import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigmodel import data, errors
from bigmodel.data import builders, pipeline, subset


def data_config(data_dir, **kw):
  return ml_collections.ConfigDict({**data.DEFAULTS, "data_dir": data_dir, **kw})


def test_mnist1d_is_the_papers_data_through_tfds(data_dir):
  ds = data.load(data_config(data_dir, name="mnist1d"))
  assert len(ds.splits["train"]) == 4000 and len(ds.splits["test"]) == 1000
  assert ds.num_classes == 10 and ds.example_shape == (40,)
  # The same records come back from a plain TFDS data source: it is a registered TFDS dataset.
  source = tfds.data_source("mnist1d", data_dir=data_dir, split="test", download=False)
  np.testing.assert_array_equal(source[7]["x"], ds.splits["test"].arrays["x"][7])
  from mnist1d.data import get_dataset_args, make_dataset
  reference = make_dataset(get_dataset_args())
  # TFDS stores records in its own shuffled order: compare as sets of (x, y) rows.
  for split, (xs, ys) in {"train": ("x", "y"), "test": ("x_test", "y_test")}.items():
    ours = ds.splits[split].arrays
    a, b = np.argsort(ours["x"][:, 0]), np.argsort(reference[xs][:, 0])
    np.testing.assert_allclose(ours["x"][a], reference[xs][b], rtol=1e-6)
    np.testing.assert_array_equal(ours["y"][a], reference[ys][b])


def test_streamed_and_cached_splits_agree(data_dir):
  cached = data.load(data_config(data_dir, cache=True)).splits["train"]
  streamed = data.load(data_config(data_dir, cache=False)).splits["train"]
  idx = np.array([5, 0, 3999, 17])
  for k in ("x", "y"):
    np.testing.assert_array_equal(cached.gather(idx)[k], streamed.gather(idx)[k])


def test_cached_splits_are_decoded_once_and_kept_beside_the_tfds_files(data_dir):
  c = data_config(data_dir, name="mnist1d")
  first = data.load(c).splits["train"].arrays
  path = os.path.join(builders.builder_class("mnist1d")(data_dir=data_dir).data_dir, "bigmodel-arrays-train.npz")
  source = tfds.data_source("mnist1d", data_dir=data_dir, split="train", download=False)
  np.testing.assert_array_equal(first["x"][[0, 123]], np.stack([source[0]["x"], source[123]["x"]]))
  kept = dict(np.load(path))
  try:  # later loads read the kept arrays, not the records: a change to the file shows through
    np.savez(path, **{**kept, "y": (kept["y"] + 1) % 10})
    np.testing.assert_array_equal(data.load(c).splits["train"].arrays["y"], (first["y"] + 1) % 10)
  finally:
    np.savez(path, **kept)
  np.testing.assert_array_equal(data.load(c).splits["train"].arrays["y"], first["y"])


def batches(split, c, seed, n, state=None):
  it = pipeline.train_iterator(split, c, seed)
  if state is not None:
    it.set_state(state)
  return [next(it) for _ in range(n)], it.get_state()


def test_batches_are_deterministic_given_the_seed_and_resume_from_state(data_dir):
  c = data_config(data_dir, batch_size=64)
  split = data.load(c).splits["train"]
  a, _ = batches(split, c, seed=0, n=10)
  b, _ = batches(split, c, seed=0, n=10)
  other, _ = batches(split, c, seed=1, n=1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["x"], y["x"])
  assert not np.array_equal(a[0]["y"], other[0]["y"])
  # Stop after 4 batches, resume from the saved state: the same next 6 batches.
  _, state = batches(split, c, seed=0, n=4)
  resumed, _ = batches(split, c, seed=0, n=6, state=state)
  for x, y in zip(a[4:], resumed):
    np.testing.assert_array_equal(x["x"], y["x"])


def test_each_epoch_visits_every_example_once_in_a_new_order():
  s = pipeline.ShuffledBatches(n=10, batch_size=4, seed=0)
  stream = np.concatenate([s[b] for b in range(5)])  # 20 indices = exactly 2 epochs
  epoch1, epoch2 = stream[:10], stream[10:]
  assert sorted(epoch1) == list(range(10)) and sorted(epoch2) == list(range(10))
  assert not np.array_equal(epoch1, epoch2)


def test_eval_batches_cover_the_split_once_with_a_mask(data_dir):
  split = data.load(data_config(data_dir)).splits["test"]
  got = list(pipeline.eval_batches(split, batch_size=300))
  assert [len(b["y"]) for b in got] == [300] * 4
  assert sum(b["mask"].sum() for b in got) == 1000
  ys = np.concatenate([b["y"][b["mask"]] for b in got])
  np.testing.assert_array_equal(ys, split.arrays["y"])


def test_uint8_images_are_scaled_to_unit_range():
  out = pipeline.preprocess({"x": np.array([[0, 255]], np.uint8), "y": np.array([1])})
  assert out["x"].dtype == np.float32 and out["x"].max() == 1.0


def test_unknown_dataset_lists_the_builtin_ones(data_dir):
  with pytest.raises(ValueError, match=r"Unknown dataset 'mnsit'\. Built in: breast_cancer, chat, diabetes, digits, digits28, fashion_mnist_local, "
                                       r"fine_foods, .*, mnist1d, shakespeare, .*; or any TFDS catalog name"):
    data.load(data_config(data_dir, name="mnsit"))


def test_missing_split_names_the_splits(data_dir):
  with pytest.raises(ValueError, match=r"no split 'validation'.*train"):
    data.load(data_config(data_dir, eval_split="validation"))


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
@pytest.mark.needs("fashion_mnist")
def test_fashion_mnist_reads_the_debian_package_files_through_tfds(data_dir):
  ds = data.load(data_config(data_dir, name="fashion_mnist_local"))
  train, test = ds.splits["train"], ds.splits["test"]
  assert (len(train), len(test), ds.num_classes, ds.example_shape) == (60000, 10000, 10, (28, 28, 1))
  # The real data set is balanced: 6,000 train and 1,000 test images per class.
  assert np.bincount(train.arrays["y"]).tolist() == [6000] * 10
  assert np.bincount(test.arrays["y"]).tolist() == [1000] * 10
  batch = next(pipeline.train_iterator(train, data_config(data_dir, batch_size=32), seed=0))
  assert batch["x"].shape == (32, 28, 28, 1) and batch["x"].dtype == np.float32
  assert 0.0 <= batch["x"].min() and batch["x"].max() <= 1.0 and batch["x"].std() > 0.1


def test_a_label_budget_keeps_each_classs_share_exactly():
  """Imbalanced labels (60 / 30 / 8 / 2 %): a budget of 100 keeps 60, 30, 8 and 2 for every seed. A plain
  random subset hits these counts 1 time in 240 (multivariate hypergeometric): five seeds in a row, ~1e-12."""
  labels_N = np.repeat(np.arange(4), [600, 300, 80, 20])[np.random.default_rng(0).permutation(1000)]
  for seed in range(5):
    picked = subset.choose(100, labels_N, seed=seed)
    assert len(np.unique(picked)) == 100
    assert np.bincount(labels_N[picked], minlength=4).tolist() == [60, 30, 8, 2], seed


def test_a_label_budget_adds_up_to_n_and_keeps_every_class_when_it_can():
  assert subset.shares([990, 5, 5], 10).tolist() == [8, 1, 1]  # shares 9.9, 0.05, 0.05: each class keeps one
  assert subset.shares([990, 5, 5], 2).tolist() == [2, 0, 0]  # fewer than the classes: by share alone
  assert subset.shares([5, 3, 2], 10).tolist() == [5, 3, 2]  # all of it
  rng = np.random.default_rng(0)
  for _ in range(200):
    counts_K = rng.integers(1, 50, rng.integers(2, 12))
    n = int(rng.integers(1, counts_K.sum() + 1))
    take_K = subset.shares(counts_K, n)
    assert take_K.sum() == n and np.all(take_K <= counts_K) and np.all(take_K >= 0)
    if n >= len(counts_K):
      assert np.all(take_K >= 1)
    assert np.all(np.abs(take_K - n * counts_K / counts_K.sum()) < 2), (counts_K, n, take_K)


def test_a_label_budget_is_the_same_examples_for_the_same_seed_and_others_for_another(data_dir):
  c = data_config(data_dir, name="mnist1d", train_examples=100)
  full = data.load(data_config(data_dir, name="mnist1d")).splits["train"].arrays
  a, b, other = (data.load(c, seed).splits["train"].arrays for seed in (0, 0, 1))
  assert len(a["y"]) == len(other["y"]) == 100
  np.testing.assert_array_equal(a["x"], b["x"])
  assert not np.array_equal(a["x"], other["x"])
  # Real training examples, each once, in each class's proportion of the 4,000.
  rows = {r.tobytes() for r in full["x"]}
  assert all(r.tobytes() in rows for r in a["x"]) and len({r.tobytes() for r in a["x"]}) == 100
  expected = subset.shares(np.bincount(full["y"], minlength=10), 100)
  assert np.bincount(a["y"], minlength=10).tolist() == expected.tolist()
  assert data.load(c, 0).splits["test"].arrays["y"].shape == (1000,)  # evaluation keeps its whole split


def test_a_label_budget_of_a_corpus_is_a_random_subset_of_its_windows_gathered_on_the_device(tmp_path):
  (tmp_path / "a.txt").write_text("".join(f"line {i} of the text\n" for i in range(300)), encoding="utf-8")
  c = data_config("", name="text_files", files=(str(tmp_path / "a.txt"),), seq_len=16, eval_split="val", train_examples=50)
  ds = data.load(c)
  whole = data.load(data_config("", name="text_files", files=(str(tmp_path / "a.txt"),), seq_len=16, eval_split="val"))
  split = ds.splits["train"]
  assert len(split) == 50 and len(whole.splits["train"]) > 5000
  idx = np.array([0, 7, 49])
  on_device = jax.jit(lambda s, i: s.gather(i))(jax.device_put(split), idx)
  for k in ("x", "y"):
    np.testing.assert_array_equal(on_device[k], whole.splits["train"].gather(split.indices_N[idx])[k])


def test_a_label_budget_larger_than_the_split_names_its_size_and_the_fix(data_dir):
  with pytest.raises(errors.UserError, match=r"data.train_examples=5000 is more than the 4,000 examples of the "
                                             r"'train' split: lower it \(at most 4000\), or 0 for all of them"):
    data.load(data_config(data_dir, name="mnist1d", train_examples=5000))
