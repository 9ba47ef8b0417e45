"""Per-example losses by name. Each maps (outputs_BxO, targets_B[xO]) -> loss_B (or loss_BxL per token).

Which task a loss serves, and so which metrics are reported, is tasks.py's.
"""
import jax
import jax.numpy as jnp
import optax


def softmax_xent(logits_BxC, labels_B):
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)


def sigmoid_bce(logits_BxO, labels):
  """Binary cross-entropy: one output with labels 0/1, or one sigmoid per class
  (integer labels are one-hot: one-vs-rest; BxO labels: multi-label)."""
  if logits_BxO.shape[-1] == 1:
    return optax.sigmoid_binary_cross_entropy(logits_BxO[:, 0], labels.astype(jnp.float32))
  if labels.ndim == 1:
    labels = jax.nn.one_hot(labels, logits_BxO.shape[-1])
  return optax.sigmoid_binary_cross_entropy(logits_BxO, labels.astype(jnp.float32)).mean(-1)


def mse(preds_BxO, targets_B):
  targets_BxO = targets_B.reshape(preds_BxO.shape).astype(jnp.float32)
  return jnp.mean((preds_BxO - targets_BxO) ** 2, axis=-1)


def lm_xent(logits_BxLxV, targets_BxL):
  """Next-token (or masked-token) cross-entropy per position; targets < 0 are ignored (loss 0)."""
  loss_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, jnp.maximum(targets_BxL, 0))
  return jnp.where(targets_BxL >= 0, loss_BxL, 0.0)


LOSSES = {"softmax_xent": softmax_xent, "sigmoid_bce": sigmoid_bce, "mse": mse, "lm_xent": lm_xent}
