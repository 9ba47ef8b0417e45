"""A trained run read back as inference needs it: its config (config.read), model, newest weights and
tokenizer. evaluate, export and generate start here; the files themselves are named in workdir.py."""
import dataclasses

import ml_collections

from bigmodel import config as config_lib, errors, sharding, workdir as workdir_lib


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
  """The run in `workdir` at its newest checkpoint (`config`: its config.read, if already read)."""
  config = config or config_lib.read(workdir)
  try:
    mesh = sharding.make_mesh(config.sharding)
  except errors.UserError:  # trained on more devices than this host has: the weights are replicated anyway
    mesh = sharding.make_mesh()
  params, model_state, step = workdir_lib.read_weights(workdir, sharding.replicated(mesh))
  return Run(config, workdir_lib.model(config), params, model_state, step, workdir_lib.read_tokenizer(workdir),
             mesh)
