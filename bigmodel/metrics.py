"""Evaluation metrics from summed statistics, so batches and devices simply add up.

Classification: accuracy, macro precision / recall / F1 and the confusion matrix
(rows = true class, columns = predicted). Regression: MSE, MAE and R².
Language modelling: per-token loss, perplexity, bits per byte and next-token accuracy.
"""
import math

import numpy as np


def classification(confusion_CxC, loss_sum):
  cm = np.asarray(confusion_CxC, np.float64)
  n = cm.sum()
  tp = np.diag(cm)
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
    recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
  present = cm.sum(1) > 0  # macro averages over the classes that occur
  return {
      "loss": float(loss_sum / n),
      "accuracy": float(tp.sum() / n),
      "precision_macro": float(precision[present].mean()),
      "recall_macro": float(recall[present].mean()),
      "f1_macro": float(f1[present].mean()),
      "confusion_matrix": cm.astype(np.int64).tolist(),
  }


def regression(sums):
  n, sse, sae, sy, syy = (float(sums[k]) for k in ("count", "sq_err", "abs_err", "y", "y2"))
  variance = syy / n - (sy / n) ** 2
  return {"loss": sse / n, "mse": sse / n, "mae": sae / n,
          "r2": 1.0 - (sse / n) / variance if variance > 0 else float("nan")}


def language_model(sums, bytes_per_token):
  """Bits per byte = nats per token / ln 2 / bytes per token: comparable across tokenizers."""
  tokens = float(sums["tokens"])
  loss = float(sums["loss"]) / tokens
  return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "bits_per_byte": loss / math.log(2) / bytes_per_token,
          "accuracy": float(sums["correct"]) / tokens, "tokens": int(tokens)}
