"""Models by name. A new model registers itself here; the trainer never changes.

  @register("my_net")
  class MyNet(nn.Module):
    num_outputs: int
    def __call__(self, x, train: bool): ...

Every model takes `num_outputs` (the trainer fills it from the dataset and loss)
and is called as `model.apply(variables, x, train=...)`.
"""
import dataclasses

from bigmodel import registry

MODELS = {}  # name -> (module class, default field values)
# Numeric model fields by name, whichever model has them (config.resolve checks them; a new field declares one).
_at_least = registry.at_least
RANGES = dict(num_outputs=_at_least(1), vocab_size=_at_least(0), type_vocab_size=_at_least(1), num_layers=_at_least(1),
              num_heads=_at_least(1), dim=_at_least(1), mlp_dim=_at_least(0), max_len=_at_least(1),
              dropout=registry.FRACTION, patch_size=_at_least(1), image_size=_at_least(0), width=_at_least(1),
              hidden=_at_least(0), depth=_at_least(0), ndim=registry.Range(1, 2), channels=_at_least(1),
              kernel_sizes=_at_least(1), strides=_at_least(1), stage_sizes=_at_least(1), padding=_at_least(0),
              pool=_at_least(1), bn_momentum=registry.FRACTION, ln_epsilon=registry.above(0),
              num_kv_heads=_at_least(0), head_dim=_at_least(0), rope_theta=registry.above(0),
              rope_factor=registry.above(0), rope_low_freq_factor=registry.above(0),
              rope_high_freq_factor=registry.above(0), rope_original_max_len=_at_least(1),
              norm_epsilon=registry.above(0))
# What a field means, by name, for the models whose module leaves it without a comment (a field's own
# trailing comment wins: `python -m bigmodel.train --print_config` reads both).
MEANINGS = dict(
    num_outputs="classes, targets or vocabulary of the head; the trainer fills it from the dataset and loss",
    width="hidden units of each layer", depth="hidden layers; 0 = logistic regression",
    dim="model width D (embeddings and residual stream)", hidden="units of the recurrent state, per direction",
    num_layers="layers (blocks) stacked", num_heads="attention heads", mlp_dim="hidden units of each block's MLP",
    max_len="longest sequence (learned position embeddings)", patch_size="pixels per side of an image patch",
    channels="output channels of each conv layer", kernel_sizes="kernel width of each conv layer",
    strides="stride of each conv layer", padding="zero padding of each conv layer, per side",
    stage_sizes="residual blocks in each stage", bn_momentum="BatchNorm's running-average momentum",
    bidirectional="a second RNN reads the sequence backwards", mlp_bias="biases on the MLP's projections",
    dropout="dropout rate in training", ln_epsilon="LayerNorm's epsilon",
    dtype="dtype of the computation (float32, bfloat16); parameters stay float32",
)


def register(name, **defaults):
  """Registers a flax module class under `name`, with optional field defaults."""
  def wrap(cls):
    MODELS[name] = (cls, defaults)
    return cls
  return wrap


def fields(name):
  """The config keys model `name` accepts: its module's dataclass fields."""
  cls, _ = registry.lookup(MODELS, name, "model")
  return [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def defaults(name):
  """{field: default} for model `name`'s fields that have one."""
  cls, registered = registry.lookup(MODELS, name, "model")
  found = {f.name: f.default for f in dataclasses.fields(cls)
           if f.name not in ("parent", "name") and f.default is not dataclasses.MISSING}
  return {**found, **registered}


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
