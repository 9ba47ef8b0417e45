"""Fills a config's missing keys with defaults and rejects keys nothing reads.

An experiment config names only what differs from these defaults and returns
`resolve(c)`: the resolved config holds every key (so any of them can be
overridden with --config.<key>=...), and it is what the trainer uses and writes
into the workdir.
"""
import ml_collections

from bigmodel import checkpoint, data, models, optim, pruning, registry, sharding, tasks

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
    distributed=False,  # multi-host (TPU pod, multi-node GPU): jax.distributed.initialize() at start
)
SECTIONS = {"data": data.DEFAULTS, "optimizer": optim.DEFAULTS, "init": checkpoint.INIT_DEFAULTS,
            "pruning": pruning.DEFAULTS, "sharding": sharding.DEFAULTS}


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  given = config.to_dict()
  registry.check_keys(given, [*DEFAULTS, *SECTIONS, "model"], "")
  out = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}
  for section, defaults in SECTIONS.items():
    registry.check_keys(given.get(section, {}), defaults, section)
    out[section] = {**defaults, **given.get(section, {})}
  tasks.resolve(out["task"], out["loss"], out["data"]["mlm_mask_rate"])  # fails early; experiment.py fills them in
  if out["init"]["hf"] and out["init"]["checkpoint"]:
    raise ValueError("init.hf and init.checkpoint are both set: start from one of them.")
  model = given.get("model", {})
  if "name" in model:
    registry.check_keys(model, ["name", *models.fields(model["name"])], "model")
  if out["init"]["hf"]:  # the checkpoint's config.json gives the model; experiment.fill merges it in
    out["model"] = model
  elif "name" not in model:
    raise ValueError(f"The config needs model.name (or init.hf). Known: {', '.join(sorted(models.MODELS))}.")
  else:
    out["model"] = {**models.defaults(model["name"]), **model}
  return ml_collections.ConfigDict(out)
