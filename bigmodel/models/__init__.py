"""Models by name. A new model registers itself here; the trainer never changes.

  @register("my_net")
  class MyNet(nn.Module):
    num_outputs: int = field(meaning="classes or outputs; the trainer fills it", range=at_least(1))
    width: int = field(64, "hidden units", at_least(1))  # config key model.width
    def __call__(self, x, train: bool): ...

Every model takes `num_outputs` (the trainer fills it from the dataset and loss)
and is called as `model.apply(variables, x, train=...)`. Each field that is a config key is declared with
`registry.field`: its default, meaning and range, read by validation and `--print_config`.
"""
import dataclasses

from bigmodel import registry

MODELS = {}  # name -> (module class, default field values)


def register(name, **defaults):
  """Registers a flax module class under `name`, with optional field defaults."""
  def wrap(cls):
    MODELS[name] = (cls, defaults)
    return cls
  return wrap


def keys(name) -> dict:
  """{config key: registry.Key} of model `name`: its module's fields (declared with registry.field), each with
  its default (the registered one where `register` gives one), meaning and range, and `name` itself."""
  cls, registered = registry.lookup(MODELS, name, "model")
  own = {field: dataclasses.replace(k, default=registered.get(field, k.default))
         for field, k in registry.model_keys(cls).items()}
  return {"name": registry.Key(name, f"the model: {', '.join(sorted(MODELS))}"), **own}


def fields(name):
  """The config keys model `name` accepts: its module's dataclass fields."""
  return [field for field in keys(name) if field != "name"]


def defaults(name):
  """{field: default} for model `name`'s fields that have one."""
  return {field: k.default for field, k in keys(name).items()
          if field != "name" and k.default is not dataclasses.MISSING}


def build(model_config):
  """Builds the module named by `model_config.name` from the other keys."""
  cls, defaults = registry.lookup(MODELS, model_config["name"], "model")
  kwargs = {k: v for k, v in dict(model_config).items() if k != "name"}
  registry.check_keys(kwargs, fields(model_config["name"]), "model")
  # Config values arrive as lists from JSON; flax module fields must be hashable.
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return cls(**{**defaults, **kwargs})


# Importing the model files fills MODELS.
from bigmodel.models import (bert, cnn, gpt, lenet, llama, lm_rnn, mlp, resnet, rnn, text_classifiers,  # noqa: E402,F401
                             transformer, vit)
