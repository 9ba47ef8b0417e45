"""A training run's files: their names, and reading the run back (its data's spec, its model, its
newest weights and its tokenizer; its config is read by config.read, which fills in keys added since).

A workdir holds the files named below: the resolved config (the task, loss and model sizes filled
in; see experiment.fill), what readers need of the dataset (`write_data_spec`), checkpoints/
(orbax), the tokenizer for text, and the logs and reports. Every module that writes or reads one
takes its name from here; evaluate, export, generate and the tests read workdirs through here.
This module sits below the config and the experiment: it reads what a run wrote, and builds nothing
from a dataset.
"""
import dataclasses
import fcntl
import json
import os
import socket

import numpy as np

from bigmodel import checkpoint, errors, lora, models, tokenizers

CONFIG = "config.json"  # the resolved config: it describes the model whole (experiment.fill)
DATA_SPEC = "data_spec.json"  # the dataset's input spec, labels and normalisation (write_data_spec)
TOKENIZER = tokenizers.FILE  # text runs: the tokenizer the data was read with
CHECKPOINTS = "checkpoints"  # orbax's directory (checkpoints)
DAMAGED_CHECKPOINTS = "damaged_checkpoints"  # unreadable steps moved aside, never deleted (checkpoint.set_aside)
PREFLIGHT = "preflight.json"  # the compiled train step's memory and FLOPs (train._compile_and_report)
SPARSITY = "sparsity.json"  # pruning's measured sparsity at the end of the run
METRICS = "metrics.jsonl"  # every logged metric, a JSON object a line (metric_writer)
TENSORBOARD = "tensorboard"  # the same scalars as TensorBoard event files
EVAL = "eval.json"  # bigmodel.evaluate's metrics of the newest checkpoint
LOCK = "train.lock"  # held by the run training in it (lock)


def path(workdir, name):
  """Where file `name` (one of the names above) of the run in `workdir` is."""
  return os.path.join(workdir, name)


def write_json(workdir, name, obj):
  with open(path(workdir, name), "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, ensure_ascii=False)


def lock(workdir):
  """Claims `workdir` for one training run: returns the open lock file, held until it is closed or the
  process ends (an OS file lock: a killed run leaves no stale lock behind). A second run on the same
  workdir, whose checkpoints the two would overwrite, is refused with the first one's process id."""
  f = open(path(workdir, LOCK), "a+")
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


def read_stored_config(workdir) -> dict:
  """The run's config.json as written (config.read resolves it: keys added since at their defaults)."""
  file = path(workdir, CONFIG)
  if not os.path.exists(file):
    raise errors.NotFound(f"{file} not found: is {workdir!r} a bigmodel.train workdir?")
  with open(file) as f:
    return json.load(f)


def write_config(workdir, config):
  with open(path(workdir, CONFIG), "w") as f:
    f.write(config.to_json(indent=2))


def model(config):
  """The run's model from its config alone (config.json holds its sizes: see config.read)."""
  return models.build(config.model)


def checkpoints(workdir, keep):
  """Orbax's manager of the run's checkpoints/, keeping the newest `keep` steps."""
  return checkpoint.manager(path(workdir, CHECKPOINTS), keep)


def located(where):
  """(the checkpoints/ folder, the step or None for the newest) that `where` names: a workdir, its
  checkpoints/ folder or one step folder in it."""
  where = os.path.abspath(where)
  if os.path.basename(where).isdigit() and os.path.isdir(os.path.join(where, "state")):
    return os.path.dirname(where), int(os.path.basename(where))
  if os.path.isdir(path(where, CHECKPOINTS)):
    return path(where, CHECKPOINTS), None
  return where, None


def read_weights(where, sharding):
  """(params, model_state, step) of a run's checkpoint (`where`: see `located`; a workdir's newest readable
  one) with the params as its model computes with them: a LoRA run's factors merged into its kernels, at
  the scale (optimizer.lora.alpha) its config.json gives."""
  folder, step = located(where)
  params, model_state, step = checkpoint.read_weights(folder, step, sharding)
  if lora.has_factors(params):
    run = os.path.dirname(folder)
    if not os.path.exists(path(run, CONFIG)):
      raise errors.NotFound(f"The checkpoints in {run} hold LoRA factors, but {path(run, CONFIG)} (which "
                            "gives their scale, optimizer.lora.alpha) is missing: put the run's config.json back.")
    stored = read_stored_config(run)["optimizer"].get("lora", {})
    params = lora.merged(params, stored.get("alpha", lora.KEYS["alpha"].default))
  return params, model_state, step


@dataclasses.dataclass
class DataSpec:
  """What a run's readers (export) need of its dataset, recorded when training starts so that they
  need not load it (nor, for init.hf, go back to the hub for its tokenizer)."""
  shape: tuple  # of one input, as the dataset holds it
  dtype: str  # of that raw input: uint8 for images (preprocessing scales them), else the model's input dtype
  labels: list | None  # class names ("0".."N-1" where the dataset has none); None unless it is labelled
  norm: tuple | None  # (mean, std) that data.normalize standardised the inputs with, float32 arrays
  tokenizer: object = None  # the dataset's, when the spec came from it (a run's own is in TOKENIZER)


def data_spec(dataset, train_split) -> DataSpec:
  """`dataset`'s spec; one example of its train split gives the raw inputs' dtype."""
  raw = dataset.splits[train_split].gather(np.arange(1))["x"]
  labels = None
  if dataset.kind == "labelled":
    names = dataset.label_names or ()
    labels = list(names) if len(names) == dataset.num_classes else [str(i) for i in range(dataset.num_classes)]
  norm = None if dataset.norm is None else tuple(np.asarray(a, np.float32) for a in dataset.norm)
  return DataSpec(tuple(dataset.example_shape), "uint8" if raw.dtype == np.uint8 else dataset.input_dtype,
                  labels, norm, dataset.tokenizer)


def write_data_spec(workdir, dataset, train_split):
  spec = data_spec(dataset, train_split)
  write_json(workdir, DATA_SPEC, dict(shape=list(spec.shape), dtype=spec.dtype, labels=spec.labels,
                                      norm=None if spec.norm is None else [a.tolist() for a in spec.norm]))


def read_data_spec(workdir) -> DataSpec:
  """The spec recorded when the run started."""
  file = path(workdir, DATA_SPEC)
  if not os.path.exists(file):
    raise errors.NotFound(f"{file} is missing: the run was written by a bigmodel older than 2026-11 (before "
                          "the data spec was recorded). Train it again, or put the file back.")
  with open(file, encoding="utf-8") as f:
    record = json.load(f)
  norm = None if record["norm"] is None else tuple(np.asarray(a, np.float32) for a in record["norm"])
  return DataSpec(tuple(record["shape"]), record["dtype"], record["labels"], norm)


def read_tokenizer(workdir):
  """The run's tokenizer, or None if it trained on something other than text."""
  if not os.path.exists(path(workdir, TOKENIZER)):
    return None
  return tokenizers.load(workdir)
