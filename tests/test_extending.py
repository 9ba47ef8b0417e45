"""A new task and a new dataset, registered from outside the package, train and evaluate with the
unchanged trainer: each is one definition in one place."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel import data, evaluate, losses, tasks
from bigmodel.train import train_and_evaluate
from conftest import tiny_config

LABELS = 3


class MultiLabel(tasks.Task):
  """Several yes/no labels per example (an image's tags, a text's topics): one sigmoid each."""
  losses = {"sigmoid_bce": losses.sigmoid_bce}
  kinds = ("labelled",)

  def num_outputs(self, dataset, loss):
    return dataset.num_classes  # one output per label

  def eval_sums(self, out, y, mask_B, loss_fn):
    right_BxO = ((out > 0) == (y > 0.5)).astype(jnp.float32)
    return {"loss": jnp.sum(loss_fn(out, y) * mask_B), "count": mask_B.sum(),
            "right": jnp.sum(right_BxO.sum(-1) * mask_B), "exact": jnp.sum(right_BxO.min(-1) * mask_B)}

  def metrics(self, sums, dataset, split):
    n = float(sums["count"])
    return {"loss": float(sums["loss"]) / n, "label_accuracy": float(sums["right"]) / (n * dataset.num_classes),
            "exact_match": float(sums["exact"]) / n}


def load_signs(c):
  """Label j of x is whether x_j + x_(j+1) > 0: learnable, and no label a constant."""
  rng = np.random.default_rng(0)
  splits = {}
  for split, n in (("train", 2000), ("test", 500)):
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x[:, :LABELS] + x[:, 1:LABELS + 1] > 0).astype(np.float32)
    splits[split] = data.InMemory({"x": x, "y": y})
  return data.Dataset(name=c.name, kind="labelled", splits=splits, num_classes=LABELS, example_shape=(8,))


@pytest.fixture
def registered():
  tasks.register("test_multilabel")(MultiLabel)
  data.register("test_signs")(load_signs)
  yield
  del tasks.TASKS["test_multilabel"], data.DATASETS["test_signs"]


def test_a_registered_task_and_dataset_train_and_evaluate_with_the_unchanged_trainer(data_dir, tmp_path, registered):
  c = tiny_config(data_dir, total_steps=300, log_every=50, eval_every=300, checkpoint_every=300)
  c.data = dict(name="test_signs", batch_size=50, eval_batch_size=100)
  c.task, c.loss = "test_multilabel", ""  # the task's own loss
  c.model = dict(name="mlp", width=32, depth=1)
  c.optimizer = dict(name="adam", learning_rate=1e-2)
  final = train_and_evaluate(c, str(tmp_path))
  # Guessing gives 0.5 per label and 0.125 for all three at once.
  assert final["label_accuracy"] > 0.9 and final["exact_match"] > 0.75, final
  saved = json.load(open(tmp_path / "config.json"))
  assert (saved["task"], saved["loss"], saved["model"]["num_outputs"]) == ("test_multilabel", "sigmoid_bce", LABELS)
  train_loss = [json.loads(line)["loss"] for line in open(tmp_path / "metrics.jsonl")]
  assert train_loss[-2] < train_loss[0] - 0.2, train_loss
  step, metrics = evaluate.evaluate_workdir(str(tmp_path))
  assert step == 300 and metrics == pytest.approx(final)


def test_a_task_refuses_a_loss_it_does_not_take(data_dir, registered):
  from bigmodel import config as config_lib
  c = tiny_config(data_dir)
  c.task, c.loss = "test_multilabel", "softmax_xent"
  with pytest.raises(ValueError, match=r"task='test_multilabel' takes loss 'sigmoid_bce', not 'softmax_xent'"):
    config_lib.resolve(c)
