"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") as a fine-tuning option.

Each kernel W (in x out) that `targets` names gets two factors beside it in the params, `lora_a`
(in x r, uniform in ±1/sqrt(in), as loralib and PEFT start it) and `lora_b` (r x out, zeros), and
the model computes with W + (alpha / r) * lora_a @ lora_b, formed before apply (`apply_fn`): the
model code does not change, and training starts from the model as it was. A stacked kernel of
scanned blocks (L x in x out, models/stack.py) gets one pair per layer, L x in x r and L x r x out,
so checkpoints convert them between the layouts as they do every stacked array.

`LoRA` is all of it to the trainer: experiment.build wraps the model in one (`wrap`), whose `init`
adds the factors, named for sharding like their kernels' axes, and whose `apply` merges them in.
The optimizer trains the factors and the parameters matching `also_trained` (a new classifier
head); every other parameter gets a zero update and no optimizer state (`labels`, optim.py), so it
ends bit-identical to where it started (init.hf, init.checkpoint or a fresh init: what those lack,
the factors, starts as initialised), and the optimizer state shrinks to that of the factors.
Checkpoints hold the factors as parameters, so resuming needs nothing new; reading a run's weights
back (workdir.read_weights: evaluate, export, generate, serve, init.checkpoint) merges them into
the kernels (`merged`).

`dropout` is LoRA's dropout on the input of the low-rank path, applied to the rows of lora_a (the
input features that path reads): one mask per step for the whole batch where the paper draws one
per example, the price of leaving the model code as it is.
"""
import re
import zlib
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from bigmodel import errors, paths as paths_lib, registry
from bigmodel.registry import FRACTION, Key, above, at_least
from bigmodel.models import stack

KEYS = dict(
    rank=Key(0, "r of the factors; 0 = off (every parameter trains)", at_least(0)),
    alpha=Key(16.0, "the low-rank update is scaled by alpha / rank (Hu et al.)", above(0)),
    targets=Key((r"/attn/\w+/kernel$", r"(^|/)mlp_(in|out|gate)/kernel$"), "kernel regexes: attention + MLP"),
    dropout=Key(0.0, "on the input features of the low-rank path (rows of lora_a), in training", FRACTION),
    also_trained=Key(("^head/",), "regexes on parameter paths trained in full beside the factors (a new head)"),
)
DEFAULTS = registry.defaults(KEYS)
FACTORS = ("lora_a", "lora_b")
RNG_STREAM = 0x10AA  # folded into the run's seed for the factors' initialisation, into a step's dropout key for masks


def check(c, optimizer_c, pruning_c):
  """Raises UserError for a LoRA config that cannot work (the ranges of its numbers are KEYS', checked by config.resolve)."""
  if not c.rank:
    return
  for key in ("targets", "also_trained"):
    registry.check_regexes(c[key], f"optimizer.lora.{key}")
  if optimizer_c.freeze:
    raise errors.UserError("optimizer.freeze and optimizer.lora.rank are both set: under LoRA every parameter but "
                           "the factors and optimizer.lora.also_trained stays fixed already. Drop one of them.")
  if pruning_c.target_sparsity:
    raise errors.UserError("pruning and LoRA do not go together: pruning changes the base weights, which LoRA "
                           "keeps fixed. Set pruning.target_sparsity=0 or optimizer.lora.rank=0.")


def _with_factors(tree, c, make, chosen, prefix=""):
  """A copy of the nested dict `tree` with make(path, kernel) -> (lora_a, lora_b) beside each targeted kernel."""
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    out[key] = _with_factors(value, c, make, chosen, path + "/") if isinstance(value, Mapping) else value
    if key == "kernel" and any(re.search(t, path) for t in c.targets):
      out["lora_a"], out["lora_b"] = make(path, value)
      chosen.append(path)
  return out


def _chosen_or_fail(chosen, tree, c):
  if not chosen:
    names = paths_lib.flatten(tree)[0]
    raise errors.UserError(f"optimizer.lora.targets={tuple(c.targets)} matches no kernel. Parameters: "
                           f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''}")


def add_factors(params, c, key):
  """`params` with lora_a (random) and lora_b (zeros) beside every kernel `c.targets` matches. A stacked
  kernel (L x in x out, scanned blocks: models/stack.py) gets one pair per layer, L x in x r and L x r x out,
  layer i's lora_a drawn as the unscanned layout draws block i's: the same factors in either layout."""
  def draw(path, kernel_IxO):
    fan_in = int(np.prod(kernel_IxO.shape[:-1]))
    bound = fan_in ** -0.5
    return jax.random.uniform(jax.random.fold_in(key, zlib.crc32(path.encode())), (fan_in, c.rank),
                              kernel_IxO.dtype, -bound, bound)

  def make(path, kernel):
    if stack.is_stacked(path):
      a_LxIxR = jnp.stack([draw(stack.layer_path(path, i), kernel[i]) for i in range(kernel.shape[0])])
      return a_LxIxR, jnp.zeros((kernel.shape[0], c.rank, kernel.shape[-1]), kernel.dtype)
    return draw(path, kernel), jnp.zeros((c.rank, kernel.shape[-1]), kernel.dtype)
  chosen = []
  out = _with_factors(params, c, make, chosen)
  _chosen_or_fail(chosen, params, c)
  return out


def with_factor_specs(logical, c):
  """The logical axis names (PartitionSpecs) of the params with factors: lora_a is split like its kernel's
  input axis, lora_b like its output axis (see sharding.py); a stacked kernel's factors have the layer axis first."""
  def make(path, spec):
    spec = tuple(spec)
    if stack.is_stacked(path):  # (layers, *the kernel's axes in one layer)
      spec = spec[1:]
      return (P(stack.LAYER_AXIS, spec[0] if len(spec) == 2 else None, None),
              P(stack.LAYER_AXIS, None, spec[-1] if spec else None))
    return P(spec[0] if len(spec) == 2 else None, None), P(None, spec[-1] if spec else None)
  return _with_factors(logical, c, make, [])


def has_factors(params):
  return any(path.rsplit("/", 1)[-1] in FACTORS for path in paths_lib.flatten(params)[0])


def merged(params, alpha, dropout_key=None, dropout=0.0, prefix=""):
  """The model's own params: each kernel with factors beside it becomes W + (alpha / r) A B, the
  factors leave. With `dropout_key`, each factor's rows of A are dropped at rate `dropout`. Stacked factors
  (L x in x r, L x r x out) merge layer by layer, each layer's mask drawn as the unscanned layout draws it."""
  out = {key: merged(value, alpha, dropout_key, dropout, f"{prefix}{key}/") if isinstance(value, Mapping) else value
         for key, value in params.items() if key not in FACTORS}
  if "lora_a" in params:
    a_IxR, b_RxO, kernel = params["lora_a"], params["lora_b"], out["kernel"]
    if dropout_key is not None and dropout:
      keep = lambda path: jax.random.bernoulli(jax.random.fold_in(dropout_key, zlib.crc32(path.encode())),
                                               1 - dropout, (a_IxR.shape[-2], 1))
      keep_Ix1 = (jnp.stack([keep(stack.layer_path(prefix, i)) for i in range(a_IxR.shape[0])])
                  if a_IxR.ndim == 3 else keep(prefix))
      a_IxR = jnp.where(keep_Ix1, a_IxR / (1 - dropout), 0)
    delta = (alpha / a_IxR.shape[-1]) * (a_IxR @ b_RxO)  # layer by layer for stacked factors
    out["kernel"] = kernel + delta.reshape(kernel.shape).astype(kernel.dtype)
  return out


def apply_fn(apply, c):
  """`apply` (a flax model's) for params that hold factors: merged first, with dropout when training."""
  def apply_merged(variables, x, *, train=False, rngs=None, **kwargs):
    key = jax.random.fold_in(rngs["dropout"], RNG_STREAM) if train and c.dropout and rngs else None
    params = merged(variables["params"], c.alpha, key, c.dropout)
    return apply({**variables, "params": params}, x, train=train, rngs=rngs, **kwargs)
  return apply_merged


def wrap(model, config):
  """`model` (a flax module) as a run of `config` trains it: in a `LoRA` when optimizer.lora.rank > 0."""
  if not config.optimizer.lora.rank:
    return model
  check(config.optimizer.lora, config.optimizer, config.pruning)
  return LoRA(model, config.optimizer.lora, config.seed)


class LoRA:
  """A flax model with LoRA's factors, which experiment.build gives the trainer in the model's place: `init`
  is the model's with the factors beside the targeted kernels (their logical axis names like their kernels',
  see `with_factor_specs`), `apply` merges them in first (with dropout in training). Whatever else a caller
  reads (num_outputs, clone, ...) is the model's own."""

  def __init__(self, model, c, seed):
    self.model, self.c, self.seed = model, c, seed

  def __getattr__(self, name):
    if name == "model":  # not set yet (copying, unpickling): no recursion
      raise AttributeError(name)
    return getattr(self.model, name)

  def init(self, rngs, *args, **kwargs):
    variables = self.model.init(rngs, *args, **kwargs)
    boxed = variables["params"]
    params = add_factors(nn.unbox(boxed), self.c, jax.random.fold_in(jax.random.key(self.seed), RNG_STREAM))
    return {**variables, "params": _boxed(boxed, params, with_factor_specs(nn.get_partition_spec(boxed), self.c))}

  def apply(self, variables, *args, **kwargs):
    return apply_fn(self.model.apply, self.c)(variables, *args, **kwargs)


def _boxed(boxed, params, specs):
  """`params` (with factors) whose factors carry their names (`specs`) and whose other leaves are `boxed`'s."""
  return {k: _boxed(boxed[k], v, specs[k]) if isinstance(v, Mapping) else
          nn.LogicallyPartitioned(v, tuple(specs[k])) if k in FACTORS else boxed[k] for k, v in params.items()}


def split(params):
  """(the params without factors, the factors alone)."""
  base = {k: split(v)[0] if isinstance(v, Mapping) else v for k, v in params.items() if k not in FACTORS}
  factors = {k: (v if k in FACTORS else split(v)[1]) for k, v in params.items()
             if k in FACTORS or isinstance(v, Mapping) and has_factors(v)}
  return base, factors


def labels(c):
  """params -> the same tree of "trained" (factors, `also_trained`) / "frozen" labels, for optax.multi_transform."""
  def label(params):
    names, _, treedef = paths_lib.flatten(params)
    return treedef.unflatten(["trained" if name.rsplit("/", 1)[-1] in FACTORS or
                              any(re.search(r, name) for r in c.also_trained) else "frozen" for name in names])
  return label
