"""Fills a config's missing keys with defaults and rejects keys nothing reads.

An experiment config names only what differs from these defaults and returns
`resolve(c)`: the resolved config holds every key (so any of them can be
overridden with --config.<key>=...), and it is what the trainer uses and writes
into the workdir.
"""
import functools

import ml_collections

from bigmodel import checkpoint, data, errors, lora, models, optim, pruning, registry, sharding, tasks

DEFAULTS = dict(
    seed=0,  # parameters, dropout and data order all derive from it
    total_steps=1000,
    task="",  # classification | regression | language_model | masked_lm (tasks.py); "" = the one `loss` implies
    loss="",  # softmax_xent | sigmoid_bce | mse | lm_xent; "" = the task's default (classification: softmax_xent)
    log_every=100,  # steps between reading train metrics (each read syncs the host)
    eval_every=1000,  # steps between evaluations on data.eval_split (and at the end)
    checkpoint_every=1000,  # steps between checkpoints (and at the end, and on SIGTERM)
    keep_checkpoints=3,
    micro_batches=1,  # gradient accumulation: each batch runs as this many sequential parts, one update
    steps_per_call=1,  # > 1: up to this many steps run in one jitted call (a lax.fori_loop), one dispatch
    compilation_cache="auto",  # persistent XLA cache: auto = <workdir>/../.jax_cache; "" = off; or a directory
    divergence_factor=1000.0,  # stop when a logged loss exceeds this multiple of the first one this run logged; 0 = off
    max_loss=0.0,  # stop when a logged loss exceeds this; 0 = off (NaN and inf always stop a run)
    distributed=False,  # multi-host (TPU pod, multi-node GPU): jax.distributed.initialize() at start
    heartbeat_timeout=30,  # multi-host: seconds a process may be silent before the others stop (distributed.py)
)
at_least = registry.at_least
RANGES = dict(seed=at_least(0), total_steps=at_least(1), log_every=at_least(1), eval_every=at_least(1),
              checkpoint_every=at_least(1), keep_checkpoints=at_least(1), micro_batches=at_least(1),
              steps_per_call=at_least(1), divergence_factor=at_least(0), max_loss=at_least(0),
              heartbeat_timeout=at_least(1))
SECTION_RANGES = {"": RANGES, "data": data.RANGES, "optimizer": optim.RANGES, "optimizer.lora": lora.RANGES,
                  "pruning": pruning.RANGES, "sharding": sharding.RANGES, "model": models.RANGES}
SECTIONS = {"data": data.DEFAULTS, "optimizer": optim.DEFAULTS, "init": checkpoint.INIT_DEFAULTS,
            "pruning": pruning.DEFAULTS, "sharding": sharding.DEFAULTS}


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  given = config.to_dict()
  registry.check_keys(given, [*DEFAULTS, *SECTIONS, "model"], "")
  out = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}
  for section, defaults in SECTIONS.items():
    out[section] = _merged(defaults, given.get(section, {}), section)
  tasks.resolve(out["task"], out["loss"], out["data"]["mlm_mask_rate"])  # fails early; experiment.py fills them in
  if out["init"]["hf"] and out["init"]["checkpoint"]:
    raise errors.UserError("init.hf and init.checkpoint are both set: start from one of them.")
  model = given.get("model", {})
  if "name" in model:
    registry.check_keys(model, ["name", *models.fields(model["name"])], "model")
  if out["init"]["hf"]:  # the checkpoint's config.json gives the model; experiment.fill merges it in
    out["model"] = model
  elif "name" not in model:
    raise errors.UserError(f"The config needs model.name (or init.hf). Known: {', '.join(sorted(models.MODELS))}.")
  else:
    out["model"] = {**models.defaults(model["name"]), **model}
  for section, ranges in SECTION_RANGES.items():  # before any data or compile work
    values = functools.reduce(lambda block, key: block[key], section.split("."), out) if section else out
    registry.check_ranges(values, ranges, section)
  return ml_collections.ConfigDict(out)


def _merged(defaults, given, where):
  """`defaults` with the `given` keys on top; a nested block (optimizer.lora) is merged key by key too."""
  registry.check_keys(given, defaults, where)
  return {key: _merged(default, given.get(key, {}), f"{where}.{key}") if isinstance(default, dict)
          else given.get(key, default) for key, default in defaults.items()}
