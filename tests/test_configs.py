"""Every experiment config loads, resolves, and documents how to run it."""
import glob
import importlib
import os

import pytest

import numpy as np

from bigmodel import config as config_lib, models
from bigmodel.train import train_and_evaluate
from conftest import ROOT
from hf_checkpoints import bert_dir, gpt2_dir, tiny_resnet, tiny_vit  # noqa: F401 (fixtures)
from test_vision import write_digit_folder

CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
                 if not os.path.basename(p).startswith(("_", "common")))


def module_name(path):
  return os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_config_resolves_and_its_docstring_says_how_to_run_it(path):
  module = importlib.import_module(module_name(path))
  doc = module.__doc__ or ""
  assert f"--config={os.path.relpath(path, ROOT)}" in doc, "docstring must give the run command"
  assert "Expect:" in doc and "TBD" not in doc, "docstring must give the measured result and time"
  c = module.get_config()
  assert config_lib.resolve(c).to_dict() == c.to_dict()  # complete: every key can be overridden
  assert c.model.name in models.MODELS if "name" in c.model else c.init.hf  # or the checkpoint chooses


def test_there_are_configs_for_every_mnist1d_paper_model():
  names = {os.path.basename(p)[:-3] for p in CONFIGS if "mnist1d" in p}
  assert {"logreg", "mlp", "cnn", "gru", "transformer"} <= names


# What each config needs besides its own files: an optional dataset, a checkpoint to start from.
NEEDS = {"fashion_mnist": "fashion_mnist", "fine_foods": "fine_foods"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, request):
  """Stand-ins for what configs start from: tiny Hugging Face checkpoints made here, and the fine_foods
  pretraining run (trained for two steps) that gpt_finetune.py names."""
  made = tmp_path_factory.mktemp("starts")
  return {"gpt2": lambda: request.getfixturevalue("gpt2_dir"), "bert-base-uncased": lambda: request.getfixturevalue("bert_dir"),
          "google/vit-base-patch16-224": lambda: tiny_vit(made / "vit"),
          "microsoft/resnet-50": lambda: tiny_resnet(made / "resnet"), "root": made}


def shrunk(c, data_dir):
  """A config cut to two steps and a small eval slice, on its own dataset and model."""
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every, c.steps_per_call = 2, 1, 2, 2, 1
  c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, 1)
  c.pruning.update(start_step=0, end_step=2, frequency=1) if c.pruning.target_sparsity else None
  c.data.data_dir, c.data.eval_examples = data_dir, 64
  c.data.eval_batch_size = min(c.data.eval_batch_size, 64)
  return c


@pytest.mark.parametrize("path", [pytest.param(p, marks=[pytest.mark.needs(d) for k, d in NEEDS.items()
                                                          if f"/{k}/" in p])
                                  for p in CONFIGS], ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_every_config_trains_two_steps_and_evaluates(path, data_dir, checkpoints, tmp_path):
  """No config rots: each trains and evaluates, with its own model and dataset, shrunk to seconds."""
  c = shrunk(importlib.import_module(module_name(path)).get_config(), data_dir)
  if c.init.hf:
    c.init.hf = checkpoints[c.init.hf]()
  if c.data.name == "image_folder":
    write_digit_folder(str(tmp_path / "images"), size=32)
    c.data.update(folder=str(tmp_path / "images"), image_size=32, eval_split="val", batch_size=16)
  if c.init.checkpoint:  # the pretraining run it names: its sibling config, trained for two steps here
    pretrained = str(checkpoints["root"] / "fine_foods_lm")
    if not os.path.exists(pretrained):
      lm = shrunk(importlib.import_module("configs.fine_foods.gpt_lm").get_config(), data_dir)
      train_and_evaluate(lm, pretrained)
    c.init.checkpoint = c.data.tokenizer = pretrained
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert final and all(np.isfinite(v) for v in final.values() if isinstance(v, float)), final
