"""Every experiment config loads, resolves, and documents how to run it."""
import glob
import importlib
import json
import os
import re

import pytest

import numpy as np

from bigmodel import config as config_lib, lora, models, registry
from bigmodel.train import train_and_evaluate
from conftest import ROOT, run_cli
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


# What each config needs besides its own files: an optional dataset.
NEEDS = {"fashion_mnist": "fashion_mnist", "fine_foods": "fine_foods"}
# Configs that another test file trains, shrunk the same way and checked further; training them
# again here would only repeat those runs. The ones that start from a Hugging Face checkpoint run in
# tests/test_huggingface.py's tests of docs/fine-tuning.md (on tiny checkpoints that transformers makes).
TRAINED_THERE = {path: "test_huggingface.py" for path in [
    "configs/fine_foods/gpt2_classifier.py", "configs/fine_foods/bert_classifier.py",
    "configs/fashion_mnist/vit_pretrained.py", "configs/image_folder/resnet50_pretrained.py",
    "configs/shakespeare/gpt2_finetune.py"]}
TRAINED_THERE.update({"configs/fine_foods/bilstm.py": "test_text_classifiers.py",
                      "configs/fine_foods/fasttext.py": "test_text_classifiers.py",
                      "configs/image_folder/binary_cnn.py": "test_vision.py",
                      "configs/fine_foods/bert_mlm.py": "test_transfer.py",
                      "configs/fine_foods/bert_finetune.py": "test_transfer.py",
                      "configs/digits/cnn_finetune.py": "test_transfer.py",
                      "configs/shakespeare/llama_lora.py": "test_llama.py",
                      "configs/openwebtext/gpt2_small.py": "test_corpus.py",  # on corpora it prepares
                      "configs/imagenet/resnet50.py": "test_images.py",  # on a small folder
                      "configs/imagenet/vit_b16.py": "test_images.py",
                      "configs/mixture/gpt_plays_reviews.py": "test_corpus.py",
                      "configs/fine_foods/smollm2_chat_lora.py": "test_instruction_tuning.py",
                      "configs/fine_foods/smollm2_chat_full.py": "test_instruction_tuning.py"})

SMOKED = [p for p in CONFIGS if os.path.relpath(p, ROOT) not in TRAINED_THERE]


def test_the_configs_left_out_below_are_trained_by_other_tests():
  for path, test_file in TRAINED_THERE.items():
    source = open(os.path.join(ROOT, "tests", test_file)).read()
    assert os.path.exists(os.path.join(ROOT, path)) and f'"{path}"' in source, (path, test_file)
  assert {os.path.relpath(p, ROOT) for p in CONFIGS} == {*TRAINED_THERE, *(os.path.relpath(p, ROOT) for p in SMOKED)}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir):
  """The fine_foods pretraining run that gpt_finetune.py starts from: its sibling gpt_lm.py, two steps."""
  workdir = str(tmp_path_factory.mktemp("starts") / "fine_foods_lm")
  train_and_evaluate(shrunk(importlib.import_module("configs.fine_foods.gpt_lm").get_config(), data_dir), workdir)
  return workdir


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
                                  for p in SMOKED], ids=[os.path.relpath(p, ROOT) for p in SMOKED])
@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_every_config_trains_two_steps_and_evaluates(path, data_dir, request, tmp_path):
  """No config rots: each trains and evaluates, with its own model and dataset, shrunk to seconds."""
  c = shrunk(importlib.import_module(module_name(path)).get_config(), data_dir)
  if c.data.name == "image_folder":
    write_digit_folder(str(tmp_path / "images"), size=32)
    c.data.update(folder=str(tmp_path / "images"), image_size=32, eval_split="val", batch_size=16)
  if c.init.checkpoint:  # the pretraining run it names
    c.init.checkpoint = c.data.tokenizer = request.getfixturevalue("pretrained")
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert final and all(np.isfinite(v) for v in final.values() if isinstance(v, float)), final


# --print_config: every key a run resolves, with its default, range and meaning (bigmodel/config.py: describe).
def leaves(tree, prefix=""):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def printed_keys(text):
  """{key: the rest of its line} of a --print_config printout."""
  return {m.group(1): m.group(2) for m in re.finditer(r"^(\S+) += (.*)$", text, re.M)}


def test_print_config_shows_every_key_the_trainer_resolves_with_its_default_range_and_meaning():
  out = run_cli("bigmodel.train", "--config=configs/mnist1d/mlp.py", "--print_config",
                "--config.optimizer.learning_rate=0.5")  # no --workdir: nothing is trained or written
  config = importlib.import_module("configs.mnist1d.mlp").get_config()
  config.optimizer.learning_rate = 0.5
  resolved = config_lib.resolve(config)  # what train_and_evaluate resolves
  lines = printed_keys(out.stdout)
  for key, value in leaves(resolved.to_dict()):
    assert key in lines, key
    if key not in ("task", "loss"):
      assert lines[key].split("  # ")[0].strip() == repr(tuple(value) if isinstance(value, list) else value), key
  assert lines["task"].startswith("'classification'")  # resolved from the loss, as experiment.fill does
  assert "default 0.001" in lines["optimizer.learning_rate"] and "range > 0" in lines["optimizer.learning_rate"]
  assert lines["model.num_outputs"].startswith("<from the dataset>")
  model = models.keys("mlp")
  for section, keys in [("", config_lib.KEYS), *config_lib.SECTIONS.items(), ("optimizer.lora", lora.KEYS),
                        ("model", model)]:
    for key, k in keys.items():
      if isinstance(k, registry.Key):
        name = f"{section}.{key}" if section else key
        assert k.meaning.rstrip(".") in lines[name], (name, k.meaning)
  assert "range >= 1" in lines["model.width"] and "hidden units of each layer" in lines["model.width"]
  assert "accuracy" not in out.stdout and "steps_per_s" not in out.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_print_config_lists_every_key_of_every_config_without_its_dataset_or_the_hub(path, monkeypatch):
  import huggingface_hub
  monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("it downloaded"))
  c = importlib.import_module(module_name(path)).get_config()
  printed = printed_keys(config_lib.describe(c))
  assert {key for key, _ in leaves(config_lib.resolve(c).to_dict())} <= set(printed)


def test_print_config_reads_a_local_checkpoints_model_and_the_config_keys_win(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(dict(model_type="gpt2", n_layer=2, n_head=2, n_embd=8,
                                                        n_positions=32, vocab_size=50)))
  c = importlib.import_module("configs.shakespeare.gpt2_finetune").get_config()
  c.init.hf = str(tmp_path)
  lines = printed_keys(config_lib.describe(c))
  assert lines["model.name"].startswith("'gpt'") and lines["model.num_layers"].startswith("2 ")
  assert lines["model.dropout"].startswith("0.1 ")  # the config's own key over the checkpoint's


def test_print_config_still_refuses_a_typo_and_training_still_needs_a_workdir():
  out = run_cli("bigmodel.train", "--config=configs/mnist1d/mlp.py", "--print_config",
                "--config.optimizer.learnin_rate=1", check=False)
  assert out.returncode == 2 and "learnin_rate" in out.stderr and not out.stdout
  out = run_cli("bigmodel.train", "--config=configs/mnist1d/mlp.py", check=False)
  assert out.returncode == 2 and "--workdir is required" in out.stderr
