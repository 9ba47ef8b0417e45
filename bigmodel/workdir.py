"""Reading a training run back: its config, its model, its newest weights and its tokenizer.

A workdir holds config.json (the resolved config with the task, loss and model sizes filled in;
see experiment.fill), checkpoints/ (orbax), the tokenizer for text, and the logs. Evaluate,
export, generate and the tests read workdirs through here and nowhere else.
"""
import dataclasses
import json
import os

import ml_collections

from bigmodel import checkpoint, config as config_lib, experiment, models, sharding, tasks, tokenizers

CONFIG = "config.json"


def read_config(workdir) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a bigmodel.train workdir?")
  with open(path) as f:
    config = config_lib.resolve(ml_collections.ConfigDict(json.load(f)))  # keys added since it was written
  config.task, config.loss = tasks.resolve(config.task, config.loss, config.data.mlm_mask_rate)
  return config


def write_config(workdir, config):
  with open(os.path.join(workdir, CONFIG), "w") as f:
    f.write(config.to_json(indent=2))


def model(config):
  """The run's model from its config alone. Workdirs written before config.json held the model's
  sizes need their dataset to work them out."""
  if "num_outputs" not in config.model:
    return experiment.build(config).model
  return models.build(config.model)


def read_tokenizer(workdir):
  """The run's tokenizer, or None if it trained on something other than text."""
  if not os.path.exists(os.path.join(workdir, tokenizers.FILE)):
    return None
  return tokenizers.load(workdir)


@dataclasses.dataclass
class Run:
  """A trained run as inference needs it."""
  config: ml_collections.ConfigDict
  model: object  # the flax module
  params: dict
  model_state: dict  # other collections, e.g. BatchNorm statistics
  step: int  # of the checkpoint the weights come from
  tokenizer: object  # None unless it trained on text
  mesh: object  # the weights are replicated over it: the config's mesh on this host's devices


def load(workdir, config=None) -> Run:
  """The run in `workdir` at its newest checkpoint (`config`: its config, if already read)."""
  config = config or read_config(workdir)
  mesh = sharding.make_mesh(config.sharding)
  params, model_state, step = checkpoint.read_weights(workdir, sharding.replicated(mesh))
  return Run(config, model(config), params, model_state, step, read_tokenizer(workdir), mesh)
