"""Attention kernels (models/attention.py): XLA's fused attention computes what the einsum path computes, in
outputs and gradients, for every mask a model gives it; the choice of kernel and its errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel import models
from bigmodel.models import attention
from conftest import outputs_and_grads, random_params

TOL = dict(rtol=1e-5, atol=1e-5)


def assert_trees_close(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, **TOL, err_msg=jax.tree_util.keystr(path))


def qkv(L=6, S=6, seed=0):
  q, k, v = (jax.random.normal(key, (2, n, 3, 8)) for key, n in zip(jax.random.split(jax.random.key(seed), 3),
                                                                      (L, S, S)))
  return q, k, v


MASKS = {  # GPT's two (padding alone, and no mask at all: BERT's and ViT's, in the model tests below)
    "causal_and_padding": lambda L, S: dict(causal=True, keys_BxS=jnp.arange(S)[None] < jnp.array([[6], [4]])),
    "cache": lambda L, S: dict(mask_BxLxS=(jnp.arange(S)[None, :] <= 3 + jnp.arange(L)[:, None])[None]),
}


@pytest.mark.parametrize("masks", list(MASKS))
def test_xla_attention_equals_the_einsum_path_and_its_gradients(masks):
  L, S = (2, 8) if masks == "cache" else (6, 6)  # a cache: 2 new queries at positions 3, 4 over 8 slots
  q, k, v = qkv(L, S)
  kw = MASKS[masks](L, S)

  def loss(impl, q, k, v):
    out = attention.attend(q, k, v, implementation=impl, **kw)
    return jnp.sum(jnp.sin(out)), out

  grad = lambda impl: jax.jit(jax.value_and_grad(lambda *a: loss(impl, *a), (0, 1, 2), has_aux=True))
  (_, want), want_grads = grad("einsum")(q, k, v)
  (_, got), got_grads = grad("xla")(q, k, v)
  np.testing.assert_allclose(got, want, **TOL)
  assert_trees_close(got_grads, want_grads)
  # The mask has teeth: attending everything gives other outputs.
  assert not np.allclose(attention.attend(q, k, v, implementation="xla"), want, atol=1e-3)


def model_and_input(family):
  """A tiny model of each family, and a batch of what it reads (text right-padded with -1)."""
  tokens = jnp.array([[3, 9, 4, 1, 7, 2, 8, 5], [6, 2, 5, 8, -1, -1, -1, -1]])
  if family == "gpt":
    return dict(name="gpt", num_layers=1, num_heads=2, dim=32, max_len=16), tokens
  if family == "bert":
    return dict(name="bert", num_layers=1, num_heads=2, dim=32, mlp_dim=64, max_len=16, dropout=0.0), tokens
  return dict(name="vit", num_layers=1, num_heads=2, dim=32, mlp_dim=64, patch_size=4), jax.random.uniform(
      jax.random.key(0), (2, 8, 8, 1))


@pytest.mark.parametrize("family", ["gpt", "bert", "vit"])
def test_each_model_computes_the_same_outputs_and_gradients_with_fused_attention(family):
  config, x = model_and_input(family)
  einsum, fused = (models.build({**config, "num_outputs": 11, "attention": a}) for a in ("einsum", "xla"))
  params = random_params(einsum, x)

  want, want_grads = outputs_and_grads(einsum, params, x)
  got, got_grads = outputs_and_grads(fused, params, x)
  np.testing.assert_allclose(got, want, **TOL)
  assert_trees_close(got_grads, want_grads)


def test_cached_decoding_with_fused_attention_equals_the_einsum_path():
  """A prefill chunk of 5 tokens, then one token at a time, against the KV cache. (The gradients through the
  cache's mask: test_xla_attention_equals_the_einsum_path_and_its_gradients[cache]; that cached decoding
  equals reading the whole text: tests/test_lm.py.)"""
  config, _ = model_and_input("gpt")
  einsum, fused = (models.build({**config, "num_outputs": 11, "attention": a}) for a in ("einsum", "xla"))
  prompt, steps = jnp.array([[3, 9, 4, 1, 7], [6, 2, 5, 8, 0]]), jnp.array([[2, 8], [1, 9]])
  params = random_params(einsum, prompt)
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(lambda: einsum.init(jax.random.key(0), prompt[:, :1], decode=True))["cache"])

  def decode(model, params):
    logits, variables = model.apply({"params": params, "cache": cache}, prompt, decode=True, mutable=["cache"])
    out = [logits]
    for t in range(steps.shape[1]):
      logits, variables = model.apply({"params": params, **variables}, steps[:, t:t + 1], decode=True,
                                      mutable=["cache"])
      out.append(logits)
    return jnp.concatenate(out, axis=1)

  run = lambda model: jax.jit(lambda p: decode(model, p))(params)
  np.testing.assert_allclose(run(fused), run(einsum), **TOL)


def test_auto_takes_xla_here_and_the_einsum_path_under_attention_dropout():
  q, k, _ = qkv()
  assert jax.default_backend() == "cpu"
  assert attention.choose("auto", q, k) == "xla"
  assert attention.choose("auto", q, k, dropout=True) == "einsum"
  assert attention.choose("auto", q.astype(jnp.bfloat16), k.astype(jnp.bfloat16)) == "xla"  # no cuDNN on a CPU


@pytest.mark.parametrize("setting,dropout,message", [
    ("flash", False, r"Unknown model.attention='flash'. Known: auto, xla, cudnn, einsum"),
    ("cudnn", False, r"model.attention='cudnn' cannot run here: it needs an NVIDIA GPU, and this is cpu. "
                     r"Use model.attention=auto"),
    ("xla", True, r"model.attention='xla' has no attention dropout: set model.dropout=0, or model.attention=auto"),
])
def test_an_attention_kernel_that_cannot_run_names_the_fix(setting, dropout, message):
  config, x = model_and_input("gpt")
  model = models.build({**config, "num_outputs": 11, "attention": setting, "dropout": 0.1 if dropout else 0.0})
  with pytest.raises(ValueError, match=message):  # while tracing: nothing is computed
    jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=True))
