"""Optimizer and learning-rate schedule from the config's `optimizer` block (optax)."""
import re

import jax
import optax

from bigmodel import errors, lora, paths as paths_lib, registry
from bigmodel.registry import FRACTION, UNIT, Key, above, at_least

KEYS = dict(
    name=Key("adam", "adam | adamw | sgd | rmsprop (optax)"),
    learning_rate=Key(1e-3, "the peak rate; the schedule shapes it over total_steps", above(0)),
    schedule=Key("constant", "constant | cosine | warmup_cosine | step"),
    warmup_steps=Key(0, "warmup_cosine: steps of linear warmup from 0", at_least(0)),
    min_lr_ratio=Key(0.0, "cosine schedules end at learning_rate * min_lr_ratio", UNIT),
    decay_rate=Key(0.1, "step schedule: multiply by decay_rate ...", above(0)),
    decay_every=Key(1000, "... every decay_every steps", at_least(1)),
    momentum=Key(0.9, "sgd (0 = plain SGD), rmsprop (0 = none)", FRACTION),
    nesterov=Key(False, "sgd, rmsprop: Nesterov momentum"),
    b1=Key(0.9, "adam/adamw: decay of the first moment", FRACTION),
    b2=Key(0.999, "adam/adamw: decay of the second moment", FRACTION),
    eps=Key(1e-8, "adam/adamw/rmsprop: added to the denominator", above(0)),
    moments_dtype=Key("", "adam/adamw: dtype of the first moment, e.g. bfloat16 (halves it); empty = the params'"),
    rmsprop_decay=Key(0.9, "rmsprop: decay of the squared-gradient average", FRACTION),
    weight_decay=Key(0.0, "decoupled for adamw; added to the gradient (L2) otherwise", at_least(0)),
    grad_clip_norm=Key(0.0, "clip the global gradient norm to this; 0 = off", at_least(0)),
    freeze=Key((), 'regexes; parameters whose path (e.g. "stage0_block0/conv0/kernel") matches one stay fixed'),
    lora=lora.KEYS,  # low-rank adaptation (lora.py): rank > 0 trains factors beside the targeted kernels
)
DEFAULTS = registry.defaults(KEYS)



def schedule(c, total_steps):
  lr = c.learning_rate
  if c.schedule == "warmup_cosine" and c.warmup_steps >= total_steps:
    raise errors.UserError(f"optimizer.warmup_steps={c.warmup_steps} must be below total_steps={total_steps}.")
  schedules = {
      "constant": lambda: optax.constant_schedule(lr),
      "cosine": lambda: optax.cosine_decay_schedule(lr, total_steps, alpha=c.min_lr_ratio),
      "warmup_cosine": lambda: optax.warmup_cosine_decay_schedule(
          0.0, lr, c.warmup_steps, total_steps, end_value=lr * c.min_lr_ratio),
      "step": lambda: optax.exponential_decay(
          lr, c.decay_every, c.decay_rate, staircase=True),
  }
  return registry.lookup(schedules, c.schedule, "schedule")()


def _decay_mask(params):
  # Decay weight matrices and kernels only: decaying biases and norm scales hurts.
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _freeze_labels(patterns):
  """params -> the same tree of "frozen" / "trained" labels; a pattern must match something."""
  def labels(params):
    paths, _, treedef = paths_lib.flatten(params)
    for pattern in patterns:
      if not any(re.search(pattern, path) for path in paths):
        raise errors.UserError(f"optimizer.freeze pattern {pattern!r} matches no parameter. Parameters: "
                               f"{', '.join(paths[:12])}{', ...' if len(paths) > 12 else ''}")
    return treedef.unflatten(
        ["frozen" if any(re.search(p, path) for p in patterns) else "trained" for path in paths])
  return labels


def optimizer(c, total_steps):
  """Returns (optax transformation, schedule) for optimizer config `c`."""
  lr = schedule(c, total_steps)
  mu_dtype = c.moments_dtype or None
  if c.moments_dtype and c.name not in ("adam", "adamw"):
    raise errors.UserError(f"optimizer.moments_dtype is for adam and adamw; {c.name!r} keeps its state in float32.")
  optimizers = {
      "sgd": lambda: optax.sgd(lr, momentum=c.momentum or None, nesterov=c.nesterov),
      "adam": lambda: optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps, mu_dtype=mu_dtype),
      "adamw": lambda: optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, mu_dtype=mu_dtype,
                                   weight_decay=c.weight_decay, mask=_decay_mask),
      "rmsprop": lambda: optax.rmsprop(lr, decay=c.rmsprop_decay, eps=c.eps,
                                       momentum=c.momentum or None, nesterov=c.nesterov),
  }
  base = registry.lookup(optimizers, c.name, "optimizer")()
  parts = []
  if c.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(c.grad_clip_norm))
  if c.weight_decay and c.name != "adamw":
    parts.append(optax.add_decayed_weights(c.weight_decay, mask=_decay_mask))
  tx = optax.chain(*parts, base)
  if c.freeze:  # frozen parameters get zero updates and no optimizer state
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, _freeze_labels(c.freeze))
  elif c.lora.rank:  # so do all but LoRA's factors (and its also_trained)
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, lora.labels(c.lora))
  return tx, lr
