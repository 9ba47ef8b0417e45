"""Losses, optimizers and schedules chosen by name."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigmodel import data, losses, optim, tasks


def opt_config(**kw):
  return ml_collections.ConfigDict({**optim.DEFAULTS, **kw})


@pytest.mark.parametrize("name,kw", [
    ("sgd", dict(momentum=0.0)), ("sgd", dict(momentum=0.9, nesterov=True)),
    ("adam", {}), ("adamw", dict(weight_decay=0.1)), ("rmsprop", {})])
def test_each_optimizer_minimises_a_quadratic(name, kw):
  tx, _ = optim.optimizer(opt_config(name=name, learning_rate=0.05, **kw), total_steps=300)
  target = jnp.array([[1.0, -2.0], [0.5, 3.0]])
  params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
  loss = lambda p: jnp.sum((p["w"] - target) ** 2) + jnp.sum((p["b"] - 1.0) ** 2)
  state = tx.init(params)
  start = loss(params)

  @jax.jit  # 300 eager updates of a dozen small ops each took ~12 s
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(300):
    params, state = step(params, state)
  assert loss(params) < 0.05 * start


def test_schedules():
  c = opt_config(learning_rate=1.0, warmup_steps=10, min_lr_ratio=0.1, decay_every=5, decay_rate=0.5)
  warm = optim.schedule(opt_config(**{**c, "schedule": "warmup_cosine"}), total_steps=100)
  assert float(warm(0)) == 0.0 and float(warm(10)) == pytest.approx(1.0)
  assert float(warm(100)) == pytest.approx(0.1) and float(warm(5)) == pytest.approx(0.5)
  cos = optim.schedule(opt_config(**{**c, "schedule": "cosine"}), total_steps=100)
  assert float(cos(0)) == 1.0 and float(cos(50)) == pytest.approx(0.55) and float(cos(100)) == pytest.approx(0.1)
  step = optim.schedule(opt_config(**{**c, "schedule": "step"}), total_steps=100)
  assert [float(step(s)) for s in (0, 4, 5, 10)] == [1.0, 1.0, 0.5, 0.25]
  assert float(optim.schedule(opt_config(learning_rate=3e-3), 100)(77)) == pytest.approx(3e-3)


def test_gradient_clipping_caps_the_update():
  tx, _ = optim.optimizer(opt_config(name="sgd", momentum=0.0, learning_rate=1.0, grad_clip_norm=1.0), 10)
  params = {"w": jnp.zeros(4)}
  updates, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params), params)
  assert float(optax.global_norm(updates)) == pytest.approx(1.0, rel=1e-5)


def test_weight_decay_shrinks_kernels_but_not_biases():
  for name in ("sgd", "adamw"):
    tx, _ = optim.optimizer(opt_config(name=name, momentum=0.0, learning_rate=0.1, weight_decay=0.5), 10)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["kernel"]).sum()) > 0, name
    assert float(jnp.abs(updates["bias"]).sum()) == 0, name


def test_unknown_names_list_the_choices():
  with pytest.raises(ValueError, match=r"Unknown optimizer 'adan'\. Known: adam, adamw, rmsprop, sgd"):
    optim.optimizer(opt_config(name="adan"), 10)
  with pytest.raises(ValueError, match=r"Unknown schedule 'linear'\. Known: constant, cosine, step, warmup_cosine"):
    optim.optimizer(opt_config(schedule="linear"), 10)


def test_losses_match_their_definitions():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
  labels = jnp.array([0, 2])
  p = jax.nn.softmax(logits)
  np.testing.assert_allclose(losses.softmax_xent(logits, labels), -jnp.log(p[jnp.arange(2), labels]), rtol=1e-6)
  z, y = jnp.array([[1.5], [-0.5]]), jnp.array([1, 0])
  s = jax.nn.sigmoid(z[:, 0])
  expected = -(y * jnp.log(s) + (1 - y) * jnp.log(1 - s))
  np.testing.assert_allclose(losses.sigmoid_bce(z, y), expected, rtol=1e-5)
  np.testing.assert_allclose(losses.mse(jnp.array([[1.0], [3.0]]), jnp.array([0.0, 1.0])), [1.0, 4.0])
  # One sigmoid output predicts class 1 when its logit is positive.
  np.testing.assert_array_equal(tasks.predict_classes(z), [1, 0])
  two_classes = data.Dataset(name="toy", kind="labelled", splits={}, num_classes=2, example_shape=(3,))
  classification = tasks.get("classification")
  assert classification.num_outputs(two_classes, "sigmoid_bce") == 1
  assert classification.num_outputs(two_classes, "softmax_xent") == 2
