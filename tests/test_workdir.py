"""A run read back from its workdir: what export needs of the dataset is recorded there at train start."""
import json
import os
import shutil

import numpy as np
import pytest

from bigmodel import artifact, config as config_lib, errors, experiment, export, runs, workdir as workdir_lib
from bigmodel.data import pipeline
from bigmodel.train import train_and_evaluate
from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny MNIST-1D CNN with normalised inputs, trained 2 steps on a data_dir of its own."""
  root = tmp_path_factory.mktemp("run")
  c = tiny_config(str(root / "tfds"), total_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  c.data.normalize = True
  train_and_evaluate(c, str(root / "run"))
  return c, str(root / "run")


def test_the_run_records_its_datasets_input_spec_labels_and_normalisation(trained):
  c, run = trained
  dataset = experiment.build(config_lib.resolve(c)).dataset
  assert dataset.norm is not None  # the test needs a normalisation to compare
  spec = workdir_lib.read_data_spec(run)
  assert spec.shape == tuple(dataset.example_shape) and spec.dtype == dataset.input_dtype
  assert spec.labels == [str(i) for i in range(dataset.num_classes)]
  for recorded, computed in zip(spec.norm, dataset.norm):
    np.testing.assert_array_equal(recorded, np.asarray(computed, np.float32))


def _unreadable_data(workdir, tmp_path):
  """Points the run's config.json at a data_dir that is a file: TFDS can neither read nor prepare it there."""
  gone = tmp_path / "tfds_gone"
  gone.write_text("not a directory")
  config = config_lib.read(workdir)
  config.data.data_dir = str(gone)
  workdir_lib.write_config(workdir, config)
  with pytest.raises(Exception):
    experiment.build(config)  # the dataset is out of reach indeed


def test_export_needs_only_the_workdir_and_an_older_workdir_is_refused_naming_what_it_lacks(trained, tmp_path):
  c, run = trained
  without_data = str(shutil.copytree(run, tmp_path / "without_data"))
  _unreadable_data(without_data, tmp_path)
  new = export.export(without_data, str(tmp_path / "new"), platforms=("cpu",))
  assert new["labels"] == [str(i) for i in range(10)] and new["input"]["dtype"] == "float32"
  x = np.random.default_rng(0).normal(size=(3, *new["input"]["shape"])).astype(np.float32)
  exported = artifact.load(str(tmp_path / "new")).classify(x)
  assert exported.shape == (3, 10) and np.allclose(exported.sum(-1), 1, atol=1e-5)

  older = str(shutil.copytree(run, tmp_path / "older"))  # written before the data spec was recorded
  os.remove(os.path.join(older, workdir_lib.DATA_SPEC))
  with pytest.raises(errors.NotFound, match=r"data_spec.json is missing: the run was written by a bigmodel older"):
    export.export(older, str(tmp_path / "old"), platforms=("cpu",))
  stored = json.load(open(os.path.join(older, workdir_lib.CONFIG)))
  del stored["model"]["num_outputs"]  # written before config.json held the model's sizes
  json.dump(stored, open(os.path.join(older, workdir_lib.CONFIG), "w"))
  with pytest.raises(errors.UserError, match=r"lacks the model's sizes \(model.num_outputs\): it was written by"):
    config_lib.read(older)


def test_a_text_classifiers_export_needs_neither_its_files_nor_its_dataset_for_class_names_and_tokenizer(tmp_path):
  rows = [("what a great film", "pos"), ("awful and boring", "neg")] * 8
  for split in ("train", "test"):
    with open(tmp_path / f"{split}.jsonl", "w") as f:
      f.writelines(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows)
  c = tiny_config(str(tmp_path / "tfds"), total_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  c.data = dict(name="text_csv", files=(str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl")),
                tokenizer="byte", seq_len=24, batch_size=8, eval_batch_size=8, eval_split="test")
  c.model = dict(name="fasttext", dim=16, hidden=16)
  workdir = str(tmp_path / "run")
  train_and_evaluate(c, workdir)
  for split in ("train", "test"):  # the run's text is gone
    os.remove(tmp_path / f"{split}.jsonl")

  spec = export.export(workdir, str(tmp_path / "model"), platforms=("cpu",))
  assert spec["labels"] == ["neg", "pos"] and spec["input"] == dict(kind="text", shape=[24], dtype="int32")
  served, run = artifact.load(str(tmp_path / "model")), runs.load(workdir)
  ids = np.stack([served.encode(text) for text in ("what a great film", "awful")])
  np.testing.assert_array_equal(ids[1, :5], run.tokenizer.encode("awful"))  # the run's own tokenizer
  logits = np.asarray(run.model.apply({"params": run.params}, ids), np.float64)
  np.testing.assert_allclose(served.classify(ids), np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), rtol=1e-5)


def test_a_config_json_written_before_the_task_and_loss_were_filled_in_reads_back_with_them(tmp_path):
  c = config_lib.resolve(tiny_config(str(tmp_path / "tfds")))
  c.model.num_outputs = 10  # as experiment.fill writes the model's sizes in
  c.task, c.loss = "", ""
  workdir_lib.write_config(str(tmp_path), c)
  read = config_lib.read(str(tmp_path))
  assert (read.task, read.loss) == ("classification", "softmax_xent")
  c.task, c.loss = "classification", "sigmoid_bce"  # as experiment.fill wrote it: read as written
  workdir_lib.write_config(str(tmp_path), c)
  read = config_lib.read(str(tmp_path))
  assert (read.task, read.loss) == ("classification", "sigmoid_bce")


def test_an_image_runs_export_takes_raw_uint8_pixels_normalised_as_training_did_without_its_dataset(tmp_path):
  c = tiny_config(str(tmp_path / "tfds"), total_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  c.data = dict(name="digits28", batch_size=32, eval_batch_size=64, normalize=True, data_dir=str(tmp_path / "tfds"))
  c.model = dict(name="cnn2d", channels=(4,), kernel_sizes=(3,), strides=(1,), padding=1, pool=2, hidden=8)
  workdir = str(tmp_path / "run")
  train_and_evaluate(c, workdir)
  dataset = experiment.build(config_lib.read(workdir)).dataset
  pixels = dataset.splits["test"].gather(np.arange(4))["x"]
  shutil.rmtree(tmp_path / "tfds")
  (tmp_path / "tfds").write_text("not a directory")  # where TFDS can neither read nor prepare the digits

  spec = export.export(workdir, str(tmp_path / "model"), platforms=("cpu",))
  assert pixels.dtype == np.uint8 and spec["input"] == dict(kind="array", shape=[28, 28, 1], dtype="uint8")
  run = runs.load(workdir)
  x = pipeline.normalize(pipeline.preprocess({"x": pixels}), dataset.norm)["x"]  # as training fed them
  logits = np.asarray(run.model.apply({"params": run.params, **run.model_state}, x, train=False), np.float64)
  np.testing.assert_allclose(artifact.load(str(tmp_path / "model")).classify(pixels),
                             np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
