"""Fills a config's missing keys with defaults and rejects keys nothing reads.

An experiment config names only what differs from the defaults and returns
`resolve(c)`: the resolved config holds every key (so any of them can be
overridden with --config.<key>=...), and it is what the trainer uses and writes
into the workdir.

Each key is declared once, beside the code that reads it, as a `registry.Key` (default, meaning,
range): the top level here (KEYS), each section in the module that SECTIONS names, and `model` in the
fields of the chosen model's class (`registry.field`, models/). `resolve` validates against those
declarations and `describe` (python -m bigmodel.train --print_config) prints them.
"""
import dataclasses
import os

import ml_collections

from bigmodel import data, errors, experiment, models, optim, pruning, registry, sharding, starting_weights, tasks
from bigmodel import workdir as workdir_lib
from bigmodel.registry import Key, at_least

KEYS = dict(
    seed=Key(0, "parameters, dropout and data order all derive from it", at_least(0)),
    total_steps=Key(1000, "optimizer updates in the run (schedules and pruning count in them)", at_least(1)),
    task=Key("", 'classification | regression | language_model | masked_lm (tasks.py); "" = the one `loss` implies'),
    loss=Key("", "softmax_xent | sigmoid_bce | mse | lm_xent; empty = the task's default (classification: "
                 "softmax_xent)"),
    log_every=Key(100, "steps between reading train metrics (each read syncs the host)", at_least(1)),
    eval_every=Key(1000, "steps between evaluations on data.eval_split (and at the end)", at_least(1)),
    checkpoint_every=Key(1000, "steps between checkpoints (and at the end, and on SIGTERM)", at_least(1)),
    keep_checkpoints=Key(3, "the newest this many checkpoints are kept, older ones deleted", at_least(1)),
    micro_batches=Key(1, "gradient accumulation: each batch runs as this many sequential parts, one update",
                      at_least(1)),
    steps_per_call=Key(1, "> 1: up to this many steps run in one jitted call (a lax.fori_loop), one dispatch",
                       at_least(1)),
    compilation_cache=Key("auto", 'persistent XLA cache: auto = <workdir>/../.jax_cache; "" = off; or a directory'),
    divergence_factor=Key(1000.0, "stop when a logged loss exceeds this multiple of the first one this run "
                                  "logged; 0 = off", at_least(0)),
    max_loss=Key(0.0, "stop when a logged loss exceeds this; 0 = off (NaN and inf always stop a run)", at_least(0)),
    distributed=Key(False, "multi-host (TPU pod, multi-node GPU): jax.distributed.initialize() at start"),
    heartbeat_timeout=Key(30, "multi-host: seconds a process may be silent before the others stop (distributed.py)",
                          at_least(1)),
)
DEFAULTS = registry.defaults(KEYS)

SECTIONS = {"data": data.KEYS, "optimizer": optim.KEYS, "init": starting_weights.INIT_KEYS, "pruning": pruning.KEYS,
            "sharding": sharding.KEYS}  # section -> its {key: Key} table; `model` is the chosen model's fields


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  given = config.to_dict()
  registry.check_keys(given, [*KEYS, *SECTIONS, "model"], "")
  out = {key: given.get(key, k.default) for key, k in KEYS.items()}
  for section, keys in SECTIONS.items():
    out[section] = _merged(keys, given.get(section, {}), section)
  tasks.resolve(out["task"], out["loss"], out["data"]["mlm_mask_rate"])  # fails early; experiment.py fills them in
  if out["init"]["hf"] and out["init"]["checkpoint"]:
    raise errors.UserError("init.hf and init.checkpoint are both set: start from one of them.")
  model = given.get("model", {})
  if "name" in model:
    registry.check_keys(model, models.keys(model["name"]), "model")
  if out["init"]["hf"]:  # the checkpoint's config.json gives the model; experiment.settle merges and checks it
    out["model"] = model
  elif "name" not in model:
    raise errors.UserError(f"The config needs model.name (or init.hf). Known: {', '.join(sorted(models.MODELS))}.")
  else:
    out["model"] = {**models.defaults(model["name"]), **model}
  _check_ranges(out, {**KEYS, **SECTIONS}, "")  # before any data or compile work
  if "name" in model:
    registry.check_ranges(out["model"], models.keys(model["name"]), "model")
  return ml_collections.ConfigDict(out)


def read(workdir) -> ml_collections.ConfigDict:
  """A run's config as training resolved it (its config.json), with keys added since then at their defaults.
  The one place that reads older workdirs: task and loss filled in where an early run left them empty; a run
  from before config.json held the model's sizes is refused, naming the fix."""
  stored = workdir_lib.read_stored_config(workdir)
  if "num_outputs" not in stored.get("model", {}):
    raise errors.UserError(f"{workdir_lib.path(workdir, workdir_lib.CONFIG)} lacks the model's sizes "
                           "(model.num_outputs): it was written by a bigmodel older than 2026-11. Train the run "
                           "again with this version.")
  config = resolve(ml_collections.ConfigDict(stored))
  if not (config.task and config.loss):  # written before experiment.fill wrote the task and loss in
    config.task, config.loss = tasks.resolve(config.task, config.loss, config.data.mlm_mask_rate)
  return config


def _merged(keys, given, where):
  """The defaults of `keys` with the `given` values on top; a nested block (optimizer.lora) key by key too."""
  registry.check_keys(given, keys, where)
  return {key: _merged(k, given.get(key, {}), f"{where}.{key}") if isinstance(k, dict) else given.get(key, k.default)
          for key, k in keys.items()}


def _check_ranges(values, keys, where):
  registry.check_ranges(values, keys, where)
  for key, k in keys.items():
    if isinstance(k, dict):
      _check_ranges(values[key], k, f"{where}.{key}" if where else key)


def describe(config: ml_collections.ConfigDict) -> str:
  """Every key of `config` as a run resolves it, one line each: `key = value  # meaning; default (where the
  value differs); range`. The resolution is `resolve`, then experiment.settle (the task and loss; with init.hf,
  a local checkpoint's model). No dataset is built: the model keys a dataset decides are shown as such."""
  c = resolve(config)
  local = os.path.isdir(c.init.hf) or (c.init.hf.endswith(".gguf") and os.path.isfile(c.init.hf))
  c = experiment.settle(c, read_hf=local)  # a hub id is not downloaded for a printout
  values = c.to_dict()
  model = values["model"]
  declared = {**KEYS, **SECTIONS, "model": models.keys(model["name"]) if "name" in model else {}}
  rows = list(_rows(values, declared, ""))
  notes = []
  if "name" in model:  # experiment.fill sets them from the dataset
    rows += [(f"model.{f}", "<from the dataset>", k.meaning) for f, k in declared["model"].items() if f not in model]
  else:
    notes.append(f"# model: init.hf={c.init.hf!r} gives the model and its sizes from its config.json when the run "
                 "starts (not read here: only a local directory is); the model keys above override them.")
  width = max(len(key) for key, _, _ in rows)
  column = min(max(len(value) for _, value, _ in rows), 28)
  lines = ["# Every config key as this run resolves it: key = value  # meaning; default (where it differs); "
           "range. Override one with --config.<key>=<value>."]
  lines += [f"{key:<{width}} = {value:<{column}}{'  # ' + about if about else ''}".rstrip()
            for key, value, about in sorted(rows)]
  return "\n".join(lines + notes)


def _rows(values, declared, section):
  """(key, value, what it is) for every leaf of `values`: the meaning, default and range its Key declares."""
  for key, value in values.items():
    name = f"{section}.{key}" if section else key
    k = declared.get(key)
    if isinstance(value, dict):
      yield from _rows(value, k if isinstance(k, dict) else {}, name)
      continue
    about = [_sentence(k.meaning)] if k else []
    if k and k.default is not dataclasses.MISSING and _plain(value) != _plain(k.default):
      about.append(f"default {k.default!r}")
    numbers = [x for x in (value if isinstance(value, (list, tuple)) else [value])
               if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if k and k.range and numbers:  # as registry.check_ranges: a range is of numbers
      about.append(f"range {k.range}")
    yield name, repr(_plain(value)), "; ".join(a for a in about if a)


def _plain(value):
  """Lists as tuples (a config read back from JSON holds lists where the defaults hold tuples)."""
  return tuple(map(_plain, value)) if isinstance(value, (list, tuple)) else value


def _sentence(text):
  """`text` without a closing full stop ("..." stays), to be followed by "; default ..."."""
  return text[:-1] if text.endswith(".") and not text.endswith("..") else text
