"""What a config describes, built without training anything: the dataset, the task and the model.

Train, evaluate and export build it from a config; generate and serve need only the model,
which a workdir's config.json describes whole (see workdir.py). The trainer (train.py) adds
what training needs on top: the optimizer, the mesh, the state and the jitted steps.
"""
import dataclasses

import ml_collections

from bigmodel import data, errors, huggingface, lora, models, registry, tasks


@dataclasses.dataclass
class Experiment:
  config: ml_collections.ConfigDict  # resolved, with task, loss and the model's sizes filled in
  dataset: data.Dataset
  task: tasks.Task
  model: object  # the flax module, in a lora.LoRA when the run trains LoRA's factors (init and apply as flax's)

  @property
  def loss_fn(self):
    return self.task.losses[self.config.loss]


def build(config, dataset=None) -> Experiment:
  """The experiment of a resolved `config` (bigmodel.config.resolve); loads its dataset unless given."""
  if config.init.hf and not config.data.tokenizer:  # text is read as the pretrained model read it
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.tokenizer = config.init.hf
  dataset = dataset or data.load(config.data, config.seed)
  config = fill(config, dataset)
  return Experiment(config, dataset, tasks.get(config.task), lora.wrap(models.build(config.model), config))


def settle(config, read_hf=True):
  """A copy of `config` with what `fill` writes in that needs no dataset: the task and loss (when the config
  leaves them to their defaults) and, with init.hf (when `read_hf`), the checkpoint's architecture and sizes
  under the config's own model keys. `python -m bigmodel.train --print_config` shows this."""
  config = ml_collections.ConfigDict(config.to_dict())
  if config.init.hf and read_hf:
    given = config.model.to_dict()
    pretrained = huggingface.model_config(config.init.hf)
    name = given.get("name", pretrained["name"])
    registry.check_keys(given, ["name", *models.fields(name)], "model")
    config.model = {**models.defaults(name), **pretrained, **given}
    registry.check_ranges(config.model, models.keys(name), "model")
  config.task, config.loss = tasks.resolve(config.task, config.loss, config.data.mlm_mask_rate)
  return config


def fill(config, dataset):
  """A copy of `config` with what the dataset decides written in: the task and loss (when the config
  leaves them to their defaults), the model's output size and, for token ids, its vocabulary; with
  init.hf, the pretrained checkpoint's architecture and sizes under the config's own model keys. Written
  into the workdir, it describes the model whole, so reading the model back needs no dataset."""
  config = settle(config)
  task = tasks.get(config.task)
  task.check(config, dataset)
  model = config.model.to_dict()
  if dataset.input_dtype == "int32" and model.get("max_len") and dataset.example_shape[0] > model["max_len"]:
    raise errors.UserError(f"data.seq_len={dataset.example_shape[0]} is longer than the model's context, "
                           f"model.max_len={model['max_len']}: lower data.seq_len or raise model.max_len.")
  model.setdefault("num_outputs", task.num_outputs(dataset, config.loss))
  if dataset.tokenizer is not None and model.get("vocab_size") == 0:
    # A classifier on a pretrained BERT sets model.vocab_size to the BERT's (with its mask id).
    model["vocab_size"] = task.input_vocab(dataset)
  _check_vocab(config, dataset, task, model)
  config.model = model
  return config


def _check_vocab(config, dataset, task, model):
  """Token ids past the model's embedding would read nothing (flax's Embed gives NaN there), and the run
  would stop later as if it had diverged: fail now, naming both sizes."""
  if dataset.tokenizer is None or "vocab_size" not in model:
    return
  needed, rows = task.input_vocab(dataset), model["vocab_size"] or model.get("num_outputs", 0)
  if needed > rows:
    source = f"init.hf={config.init.hf!r}'s" if config.init.hf else "the model's"
    raise errors.UserError(
        f"The tokenizer (data.tokenizer={config.data.tokenizer or 'char'!r}) makes ids up to {needed - 1:,}, but "
        f"{source} embedding has {rows:,} rows (model.vocab_size). Read the text with the model's own tokenizer "
        "(leave data.tokenizer empty with init.hf), or give the model a vocabulary of at least "
        f"{needed:,} (model.vocab_size, and init.reinit for a pretrained embedding).")
