"""Every experiment config loads, resolves, and documents how to run it."""
import glob
import importlib
import os

import pytest

from bigmodel import config as config_lib, models
from conftest import ROOT

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
