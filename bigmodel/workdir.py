"""Reading a training run back: its config, its model, its newest weights and its tokenizer.

A workdir holds config.json (the resolved config with the task, loss and model sizes filled in;
see experiment.fill), checkpoints/ (orbax), the tokenizer for text, and the logs. Evaluate,
export, generate and the tests read workdirs through here and nowhere else.
"""
import dataclasses
import fcntl
import json
import os
import socket

import ml_collections

from bigmodel import checkpoint, config as config_lib, errors, experiment, models, sharding, tasks, tokenizers

CONFIG = "config.json"
LOCK = "train.lock"


def lock(workdir):
  """Claims `workdir` for one training run: returns the open lock file, held until it is closed or the
  process ends (an OS file lock: a killed run leaves no stale lock behind). A second run on the same
  workdir, whose checkpoints the two would overwrite, is refused with the first one's process id."""
  f = open(os.path.join(workdir, LOCK), "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "unknown"
    f.close()
    raise errors.UserError(f"{workdir} is in use by another training run (process {holder}). Wait for it to "
                           "finish or stop it, or train in another --workdir.") from None
  f.seek(0)
  f.truncate()
  f.write(f"{os.getpid()} on {socket.gethostname()}\n")
  f.flush()
  return f


def read_config(workdir) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    raise errors.NotFound(f"{path} not found: is {workdir!r} a bigmodel.train workdir?")
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
  try:
    mesh = sharding.make_mesh(config.sharding)
  except errors.UserError:  # trained on more devices than this host has: the weights are replicated anyway
    mesh = sharding.make_mesh()
  params, model_state, step = checkpoint.read_weights(workdir, sharding.replicated(mesh))
  return Run(config, model(config), params, model_state, step, read_tokenizer(workdir), mesh)
