"""Magnitude pruning as an optax transformation (Zhu & Gupta 2017, "To prune, or not to prune").

The masks live in the optimizer state, so they are checkpointed with the train
state: a resumed run keeps them. Pruning begins after `start_step`. Gradual
(`schedule="polynomial"`) raises the sparsity at step t on Zhu & Gupta's curve

    s_t = s_f * (1 - (1 - (t - start_step) / (end_step - start_step)) ** power)

recomputing the masks every `frequency` steps and at `end_step`, where it reaches
`target_sparsity`. `one_shot` prunes to the target at step start_step + 1 at once
(with `init.checkpoint`: prune a trained model, then fine-tune). Each update then
holds the pruned weights at exactly zero, whatever the optimizer proposes.
"""
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigmodel import errors, paths as paths_lib, registry
from bigmodel.registry import FRACTION, Key, above, at_least

KEYS = dict(
    target_sparsity=Key(0.0, "fraction of the in-scope weights that end at zero; 0 = no pruning", FRACTION),
    schedule=Key("polynomial", "polynomial (gradual, Zhu & Gupta) | one_shot (all at start_step + 1)"),
    start_step=Key(0, "pruning begins after this step", at_least(0)),
    end_step=Key(0, "polynomial: the step at which target_sparsity is reached", at_least(0)),
    frequency=Key(100, "polynomial: steps between mask updates (Zhu & Gupta's delta t)", at_least(1)),
    power=Key(3, "polynomial: exponent of the curve (Zhu & Gupta use 3)", above(0)),
    scope=Key(("kernel$",), "regexes on parameter paths that may be pruned: every Dense/Conv kernel"),
    exclude=Key((), 'regexes on parameter paths never pruned, e.g. "^head/"'),
    granularity=Key("global", "global: one threshold over all in-scope weights | per_layer: each to the target"),
)
DEFAULTS = registry.defaults(KEYS)
SCHEDULES = ("polynomial", "one_shot")
GRANULARITIES = ("global", "per_layer")


def check(c, total_steps):
  """Raises UserError for a pruning config that cannot do what it says (the ranges of its numbers are
  KEYS', checked by config.resolve)."""
  registry.lookup(dict.fromkeys(SCHEDULES), c.schedule, "pruning.schedule")
  registry.lookup(dict.fromkeys(GRANULARITIES), c.granularity, "pruning.granularity")
  for key in ("scope", "exclude"):
    registry.check_regexes(c[key], f"pruning.{key}")
  if not c.target_sparsity:
    return
  if c.schedule == "polynomial":
    if not c.start_step < c.end_step <= total_steps:
      raise errors.UserError(f"pruning needs start_step < end_step <= total_steps; got start_step={c.start_step}, "
                             f"end_step={c.end_step}, total_steps={total_steps}. Set pruning.end_step to the step "
                             "where the target sparsity should be reached.")
  elif c.start_step >= total_steps:
    raise errors.UserError(f"pruning.start_step={c.start_step} must be below total_steps={total_steps}.")


def in_scope(c, params):
  """The params tree as booleans: True where a weight may be pruned. Fails if nothing is in scope."""
  paths, _, treedef = paths_lib.flatten(params)
  chosen = [any(re.search(s, p) for s in c.scope) and not any(re.search(e, p) for e in c.exclude)
            for p in paths]
  if not any(chosen):
    raise errors.UserError(f"pruning.scope={tuple(c.scope)} (minus exclude={tuple(c.exclude)}) matches no parameter. "
                           f"Parameters: {', '.join(paths[:12])}{', ...' if len(paths) > 12 else ''}")
  return treedef.unflatten(chosen)


def sparsity_at(c):
  """Step -> the sparsity the masks hold after that step."""
  if c.schedule == "one_shot":
    return lambda t: jnp.where(t > c.start_step, c.target_sparsity, 0.0)
  return optax.polynomial_schedule(0.0, c.target_sparsity, c.power, c.end_step - c.start_step, c.start_step)


def _mask_update_due(c, t):
  if c.schedule == "one_shot":
    return t == c.start_step + 1
  return (t > c.start_step) & (t <= c.end_step) & (((t - c.start_step) % c.frequency == 0) | (t == c.end_step))


def _keep_largest(magnitudes, sparsity):
  """True for all but the round(sparsity * n) smallest of `magnitudes` (one flat array)."""
  n_pruned = jnp.round(sparsity * magnitudes.size).astype(jnp.int32)
  threshold = jnp.where(n_pruned > 0, jnp.sort(magnitudes)[jnp.maximum(n_pruned - 1, 0)], -1.0)
  return magnitudes > threshold


def masks_for(weights, sparsity, granularity):
  """Boolean masks keeping the largest-magnitude weights, with one threshold or one per array."""
  if granularity == "per_layer":
    return jax.tree.map(lambda w: _keep_largest(jnp.abs(w).ravel(), sparsity).reshape(w.shape), weights)
  leaves, treedef = jax.tree.flatten(weights)
  keep = _keep_largest(jnp.concatenate([jnp.abs(w).ravel() for w in leaves]), sparsity)
  bounds = np.cumsum([w.size for w in leaves])[:-1]
  return treedef.unflatten([k.reshape(w.shape) for k, w in zip(jnp.split(keep, bounds), leaves)])


class PruningState(NamedTuple):
  count: jax.Array  # updates applied so far: this update produces step count + 1
  masks: Any  # one boolean array per in-scope parameter; False = pruned


def magnitude_pruning(c) -> optax.GradientTransformation:
  """Chained after the optimizer: turns its updates into ones that leave pruned weights at zero."""
  schedule = sparsity_at(c)

  def prune(updates, state, params):
    t = state.count + 1
    new_params = jax.tree.map(jnp.add, params, updates)
    masks = jax.lax.cond(_mask_update_due(c, t),
                         lambda: masks_for(new_params, schedule(t), c.granularity), lambda: state.masks)
    # A kept weight takes its update unchanged; a pruned one is sent to exactly zero.
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, masks)
    return updates, PruningState(t, masks)

  inner = optax.GradientTransformation(
      lambda params: PruningState(jnp.zeros([], jnp.int32), jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)),
      prune)
  return optax.masked(inner, lambda params: in_scope(c, params))


def report(c, params):
  """Measured sparsity (fraction of exact zeros) per in-scope parameter and overall."""
  scope = jax.tree.leaves(in_scope(c, params))
  paths, _, _ = paths_lib.flatten(params)
  layers, zeros, size, all_zeros, all_size = {}, 0, 0, 0, 0
  for path, w, chosen in zip(paths, jax.tree.leaves(params), scope):
    z = int(np.sum(np.asarray(w) == 0))
    all_zeros, all_size = all_zeros + z, all_size + w.size
    if chosen:
      layers[path] = {"sparsity": z / w.size, "size": int(w.size)}
      zeros, size = zeros + z, size + w.size
  return {"target_sparsity": c.target_sparsity, "in_scope_sparsity": zeros / size,
          "overall_sparsity": all_zeros / all_size, "in_scope_parameters": size, "parameters": all_size,
          "layers": layers}
