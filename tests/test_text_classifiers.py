"""The classic text classifiers (models/text_classifiers.py): padding is invisible; their configs fit reviews."""
import importlib
import json
import os

import jax
import numpy as np
import pytest

from bigmodel import errors, models
from bigmodel.train import train_and_evaluate

MODELS = {"bilstm": dict(dim=16, hidden=8, num_layers=2), "fasttext": dict(dim=16, hidden=16)}


@pytest.mark.parametrize("name, num_outputs", [("bilstm", 2), ("fasttext", 1)])
def test_more_padding_after_a_text_does_not_change_its_logits(name, num_outputs):
  model = models.build({"name": name, "num_outputs": num_outputs, "vocab_size": 50, **MODELS[name]})
  lengths_B = np.array([12, 5, 1, 0])  # the last text is empty
  tokens_BxL = np.where(np.arange(12) < lengths_B[:, None],
                        np.random.default_rng(0).integers(0, 50, (4, 12)), -1).astype(np.int32)
  variables = jax.jit(model.init)(jax.random.key(0), tokens_BxL)  # one compile, not one per eager op
  apply = jax.jit(model.apply)
  logits_BxO = apply(variables, tokens_BxL)
  assert logits_BxO.shape == (4, num_outputs)
  padded_BxL = np.pad(tokens_BxL, ((0, 0), (0, 20)), constant_values=-1)
  np.testing.assert_allclose(apply(variables, padded_BxL), logits_BxO, atol=1e-5, rtol=0)
  # The real tokens do count: the first and the last of a text each change its logits.
  for position in (0, 4):
    changed_BxL = tokens_BxL.copy()
    changed_BxL[1, position] = (changed_BxL[1, position] + 1) % 50
    assert np.abs(apply(variables, changed_BxL)[1] - logits_BxO[1]).max() > 1e-4, position


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
@pytest.mark.needs("fine_foods")
@pytest.mark.parametrize("path", ["configs/fine_foods/bilstm.py", "configs/fine_foods/fasttext.py"])
def test_each_text_classifier_config_fits_a_slice_of_the_reviews(path, data_dir, tmp_path):
  """The config's own model, BPE tokenizer and one-logit head, on a label budget of 128 reviews (32 tokens
  each): the training loss falls well below that of always answering the majority class (0.65 nats:
  65 % "great"). Also the config's smoke test (test_configs.py leaves it to this one)."""
  c = importlib.import_module(path[:-3].replace("/", ".")).get_config()
  c.update(total_steps=40, log_every=1, eval_every=40, checkpoint_every=40, steps_per_call=1)
  c.data.update(seq_len=32, train_examples=128, eval_examples=64, eval_batch_size=64, data_dir=data_dir)
  c.optimizer.update(learning_rate=1e-2, warmup_steps=1)
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(c, workdir)
  train = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if '"train"' in line]
  losses = [r["loss"] for r in train]  # one a step
  assert losses[0] > 0.6 and np.mean(losses[-5:]) < 0.3, losses
  assert 0 <= final["accuracy"] <= 1 and np.isfinite(final["loss"])
  assert json.load(open(os.path.join(workdir, "config.json")))["model"]["num_outputs"] == 1  # sigmoid_bce


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_text_classifier_on_inputs_that_are_not_token_ids_says_what_it_needs(name):
  model = models.build({"name": name, "num_outputs": 2})  # no tokenizer filled in vocab_size
  with pytest.raises(errors.UserError, match=r"model.vocab_size=0: this model reads token ids\. Train it on a text "
                                             r"dataset \(data.name=fine_foods"):
    model.init(jax.random.key(0), np.zeros((2, 8), np.int32))
