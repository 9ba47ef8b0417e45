"""Models: shapes, the paper's parameter counts, attention maths, registration."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel import errors, models
from bigmodel.models.transformer import MultiHeadAttention


def n_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


def init(name, x, **kw):
  model = models.build({"name": name, "num_outputs": 10, **kw})
  return model, jax.jit(model.init)(jax.random.key(0), x)  # one compile, not one per eager op


@pytest.mark.parametrize("name", ["mlp", "logistic_regression", "cnn1d", "gru", "lstm", "transformer"])
def test_sequence_models_map_a_batch_to_logits(name):
  x = jax.random.normal(jax.random.key(1), (3, 40))
  model, variables = init(name, x)
  apply = jax.jit(model.apply)
  logits = apply(variables, x)
  assert logits.shape == (3, 10) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  # Rows are independent: changing example 0 leaves example 1's logits alone.
  logits2 = apply(variables, x.at[0].set(0.0))
  np.testing.assert_allclose(logits[1:], logits2[1:], rtol=1e-5, atol=1e-6)


def test_cnn2d_on_images():
  x = jnp.zeros((2, 28, 28, 1))
  model, variables = init("cnn2d", x)
  assert model.apply(variables, x).shape == (2, 10)


def test_parameter_counts_match_the_mnist1d_paper_models():
  x = jnp.zeros((1, 40))
  assert n_params(init("logistic_regression", x)[1]) == 40 * 10 + 10
  assert n_params(init("mlp", x)[1]) == (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)
  # conv 5x1x25, 3x25x25, 3x25x25 with biases; length 40 -> 19 -> 10 -> 5, so a 125 x 10 head.
  assert n_params(init("cnn1d", x)[1]) == (5 * 25 + 25) + 2 * (3 * 25 * 25 + 25) + (125 * 10 + 10)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_bidirectional_rnn_sees_the_future_and_unidirectional_does_not():
  x = jax.random.normal(jax.random.key(2), (1, 40))
  for cell in ("gru", "gru_torch", "lstm"):
    for bidirectional in (False, True):
      model, variables = init("lstm" if cell == "lstm" else "gru", x, cell=cell, bidirectional=bidirectional,
                              readout="flatten", hidden=4)
      # Keep only the head rows that read time step 0 (flatten order is step, feature).
      F = 8 if bidirectional else 4
      head = variables["params"]["head"]["kernel"]
      variables["params"]["head"]["kernel"] = head.at[F:].set(0.0)
      grad_x = jax.grad(lambda x: model.apply(variables, x).sum())(x)
      future = np.abs(grad_x[0, 1:]).sum()
      assert (future > 0) == bidirectional, (cell, bidirectional, future)


def torch_bigru_and_head(F, H, L, num_outputs):
  import torch  # a test requirement (requirements-test.txt): the reference, not skipped without it
  torch.manual_seed(0)
  return torch, torch.nn.GRU(F, H, batch_first=True, bidirectional=True), torch.nn.Linear(2 * H * L, num_outputs)


def test_torch_gru_cell_equals_torch_nn_gru_with_its_weights():
  B, L, F, H = 4, 7, 3, 5
  torch, gru, head = torch_bigru_and_head(F, H, L, 10)
  x_BxLxF = np.random.default_rng(0).normal(size=(B, L, F)).astype(np.float32)
  model, variables = init("gru", jnp.asarray(x_BxLxF), cell="gru_torch", hidden=H)
  assert n_params(variables) == sum(p.numel() for p in [*gru.parameters(), *head.parameters()])
  t = lambda p: jnp.asarray(p.detach().numpy())
  params = {f"TorchGRUCell_{i}": {"ih_kernel": t(getattr(gru, f"weight_ih_l0{s}")).T,  # 0 forward, 1 backward
                                  "hh_kernel": t(getattr(gru, f"weight_hh_l0{s}")).T,
                                  "ih_bias": t(getattr(gru, f"bias_ih_l0{s}")), "hh_bias": t(getattr(gru, f"bias_hh_l0{s}"))}
            for i, s in enumerate(("", "_reverse"))}
  params["head"] = {"kernel": t(head.weight).T, "bias": t(head.bias)}
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, variables["params"])
  with torch.no_grad():
    out_BxLx2H, _ = gru(torch.from_numpy(x_BxLxF))
    want = head(out_BxLx2H.flatten(1)).numpy()
  got = model.apply({"params": params}, jnp.asarray(x_BxLxF))
  assert np.abs(want).max() > 0.1  # not trivially small
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_torch_gru_cell_initialises_like_torch():
  H = 64  # enough draws per tensor to see the distribution
  _, gru, _ = torch_bigru_and_head(3, H, 1, 10)
  _, variables = init("gru", jnp.zeros((1, 1, 3)), cell="gru_torch", hidden=H)
  for name, p in variables["params"]["TorchGRUCell_0"].items():
    bound = H ** -0.5  # torch: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias
    assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound, name
    np.testing.assert_allclose(np.std(p), bound / np.sqrt(3), rtol=0.15, err_msg=name)
  torch_std = gru.weight_hh_l0.detach().numpy().std()
  np.testing.assert_allclose(np.std(variables["params"]["TorchGRUCell_0"]["hh_kernel"]), torch_std, rtol=0.05)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_torch_gru_cell_trains_to_remember_the_first_step():
  import optax
  model = models.build({"name": "gru", "num_outputs": 2, "cell": "gru_torch", "hidden": 8,
                        "bidirectional": False, "readout": "last"})
  x_BxL = jax.random.normal(jax.random.key(0), (256, 12))
  y_B = (x_BxL[:, 0] > 0).astype(jnp.int32)  # the state must carry the first step's sign 11 steps
  params = model.init(jax.random.key(1), x_BxL)["params"]
  tx = optax.adam(1e-2)
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x_BxL), y_B).mean()

  @jax.jit
  def steps(params):
    def step(_, carry):
      params, opt = carry
      updates, opt = tx.update(jax.grad(loss)(params), opt, params)
      return optax.apply_updates(params, updates), opt
    return jax.lax.fori_loop(0, 300, step, (params, tx.init(params)))[0]

  before, trained = loss(params), steps(params)
  accuracy = (model.apply({"params": trained}, x_BxL).argmax(-1) == y_B).mean()
  assert before > 0.6 and loss(trained) < 0.05 and accuracy > 0.99, (before, loss(trained), accuracy)


def test_attention_is_softmax_qk_over_sqrt_d_times_v():
  B, L, D, H = 2, 5, 8, 2
  K = D // H
  x = jax.random.normal(jax.random.key(3), (B, L, D))
  attn = MultiHeadAttention(num_heads=H, head_dim=K)
  v = attn.init(jax.random.key(4), x)
  p = v["params"]
  qkv = x @ p["qkv"]["kernel"] + p["qkv"]["bias"]
  q, k, val = jnp.split(qkv, 3, axis=-1)
  heads = []
  for h in range(H):  # one head at a time, written out by hand
    qh, kh, vh = (t[..., h * K:(h + 1) * K] for t in (q, k, val))
    w = jax.nn.softmax(qh @ kh.transpose(0, 2, 1) / np.sqrt(K), axis=-1)
    heads.append(w @ vh)
  expected = jnp.concatenate(heads, -1) @ p["out"]["kernel"] + p["out"]["bias"]
  np.testing.assert_allclose(attn.apply(v, x), expected, rtol=1e-5, atol=1e-5)


def test_attention_mask_blocks_masked_positions():
  x = jax.random.normal(jax.random.key(5), (1, 4, 8))
  attn = MultiHeadAttention(num_heads=2, head_dim=4)
  v = attn.init(jax.random.key(6), x)
  mask = jnp.tril(jnp.ones((1, 4, 4), bool))  # causal
  out = attn.apply(v, x, mask)
  out2 = attn.apply(v, x.at[:, 3].set(100.0), mask)  # change only the last position
  np.testing.assert_allclose(out[:, :3], out2[:, :3], rtol=1e-5, atol=1e-5)


def test_unknown_model_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet81'\. Known: .*cnn1d.*gru.*transformer"):
    models.build({"name": "resnet81", "num_outputs": 10})


def test_unknown_model_field_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"model\.chanels.*Valid keys under 'model'.*channels"):
    models.build({"name": "cnn1d", "num_outputs": 10, "chanels": (8,)})


def test_a_new_model_registers_without_touching_the_trainer():
  @models.register("test_linear_probe")
  class Probe(nn.Module):
    num_outputs: int

    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(self.num_outputs)(x.reshape(x.shape[0], -1))

  try:
    m = models.build({"name": "test_linear_probe", "num_outputs": 3})
    assert isinstance(m, Probe)
  finally:
    del models.MODELS["test_linear_probe"]


@pytest.mark.parametrize("ndim,strides,padding", [(1, 2, ((1, 1),)), (1, 1, "SAME"), (2, 2, ((1, 1), (1, 1))),
                                                  (2, 1, "VALID")])
def test_conv_as_matmul_equals_xla_convolution_and_its_gradients(ndim, strides, padding):
  from bigmodel.models.cnn import conv_as_matmul
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, *(11,) * ndim, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(*(3,) * ndim, 4, 5)), jnp.float32)
  dims = ("NWC", "WIO", "NWC") if ndim == 1 else ("NHWC", "HWIO", "NHWC")

  def loss(conv, x, kernel):
    out = conv(x, kernel, (strides,) * ndim, padding, dimension_numbers=dims)
    return jnp.sum(jnp.sin(out)), out

  (_, want), want_grads = jax.value_and_grad(lambda *a: loss(jax.lax.conv_general_dilated, *a),
                                             argnums=(0, 1), has_aux=True)(x, kernel)
  (_, got), got_grads = jax.value_and_grad(lambda *a: loss(conv_as_matmul, *a), argnums=(0, 1), has_aux=True)(x, kernel)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_conv_as_matmul_refuses_dilation():
  from bigmodel.models.cnn import conv_as_matmul
  with pytest.raises(ValueError, match="no dilation"):
    conv_as_matmul(jnp.ones((1, 8, 1)), jnp.ones((3, 1, 1)), (1,), ((1, 1),), rhs_dilation=(2,))


@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 4)])
def test_the_cpu_dense_matmul_and_its_gradients_equal_lax_dot_general(shape):
  from bigmodel import platform
  dot_general = platform.dense_dot_general()
  assert dot_general is not None  # the tests run on CPU, where the dense layers use it
  rng = np.random.default_rng(0)
  x, kernel = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in (shape, (4, 5)))
  dims = (((x.ndim - 1,), (0,)), ((), ()))
  loss = lambda dot, x, kernel: jnp.sum(jnp.sin(dot(x, kernel, dims)) * jnp.arange(5.0))
  want = jax.value_and_grad(lambda *a: loss(jax.lax.dot_general, *a), argnums=(0, 1))(x, kernel)
  got = jax.value_and_grad(lambda *a: loss(dot_general, *a), argnums=(0, 1))(x, kernel)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.shape == w.shape
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_a_gpt_without_biases_has_none_and_no_gpt2_export():
  from bigmodel.huggingface import gpt2
  fields = dict(name="gpt", num_outputs=50, num_layers=2, num_heads=2, dim=32, max_len=16)
  x = jnp.zeros((1, 8), jnp.int32)
  shapes = lambda model: jax.eval_shape(lambda: model.init(jax.random.key(0), x))  # the structure, nothing computed
  biased = jax.tree_util.tree_flatten_with_path(shapes(models.build(fields)))[0]
  plain = jax.tree_util.tree_flatten_with_path(shapes(models.build({**fields, "use_bias": False})))[0]
  name = lambda path: jax.tree_util.keystr(path)
  assert any("bias" in name(p) for p, _ in biased)
  assert not any("bias" in name(p) for p, _ in plain)
  assert {name(p) for p, _ in plain} == {name(p) for p, _ in biased if "bias" not in name(p)}
  with pytest.raises(errors.UserError, match="no biases"):
    gpt2.hf_config({**fields, "mlp_dim": 0, "vocab_size": 0, "ln_epsilon": 1e-5, "use_bias": False})
