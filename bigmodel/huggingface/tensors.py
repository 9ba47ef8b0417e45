"""How a Hugging Face tensor becomes one of our arrays, and back: the pieces every family's table uses.

A family's table (gpt2.py, bert.py, ...) maps each of our array paths ("params/block0/attn/qkv/kernel")
to a `Tensors`: which checkpoint tensor(s) it is made of and how. PyTorch's Linear stores (out, in)
where flax's Dense stores (in, out).
"""
import dataclasses

import numpy as np


@dataclasses.dataclass
class Tensors:
  names: tuple  # checkpoint tensor names, as the task model (GPT2LMHeadModel, ...) saves them
  load: callable  # (arrays, our shape) -> our array
  save: callable  # our array -> the checkpoint arrays, in `names` order
  head: str = ""  # a head the checkpoint may lack as a whole (a base model, e.g. BertModel, has no MLM head):
                  # then its arrays start fresh; a head present in part is an error, never a silent fresh start


def same(name, head=""):
  return Tensors((name,), lambda a, shape: a[0], lambda x: (x,), head)


def linear(name, head=""):
  """A torch Linear weight (out, in) as a flax kernel (in, out)."""
  return Tensors((name,), lambda a, shape: a[0].T, lambda x: (x.T,), head)


def fused(names, bias=False):
  """Separate q, k, v Linears as one fused "(three h k)" Dense: kernels side by side."""
  if bias:
    return Tensors(tuple(names), lambda a, shape: np.concatenate(a), None)
  return Tensors(tuple(names), lambda a, shape: np.concatenate([w.T for w in a], axis=1), None)


def norm(ours, theirs):
  """A LayerNorm: our scale and bias from its weight and bias."""
  return {f"params/{ours}/scale": same(f"{theirs}.weight"), f"params/{ours}/bias": same(f"{theirs}.bias")}


def dense(ours, theirs, transposed=True, head=""):
  """A Dense layer: kernel and bias from a Linear's (`transposed`) or a GPT-2 Conv1D's weight and bias."""
  make = linear if transposed else same
  return {f"params/{ours}/kernel": make(f"{theirs}.weight", head), f"params/{ours}/bias": same(f"{theirs}.bias", head)}
