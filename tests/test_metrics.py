"""Evaluation metrics against scikit-learn's, and summing over padded batches."""
import numpy as np
import pytest
from sklearn import metrics as skm

from bigmodel import metrics

from conftest import tiny_config, make_trainer


def test_classification_metrics_match_sklearn():
  rng = np.random.default_rng(0)
  y_true = rng.integers(0, 5, 300)
  y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 5, 300))
  cm = skm.confusion_matrix(y_true, y_pred, labels=range(5))
  m = metrics.classification(cm, loss_sum=30.0)
  p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
  assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx((p, r, f))
  assert m["loss"] == pytest.approx(0.1) and m["confusion_matrix"] == cm.tolist()


def test_regression_metrics_match_sklearn():
  rng = np.random.default_rng(1)
  y, pred = rng.normal(size=50), rng.normal(size=50)
  sums = dict(count=50, sq_err=((pred - y) ** 2).sum(), abs_err=np.abs(pred - y).sum(), y=y.sum(), y2=(y ** 2).sum())
  m = metrics.regression(sums)
  assert m["mse"] == pytest.approx(skm.mean_squared_error(y, pred))
  assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
  assert m["r2"] == pytest.approx(skm.r2_score(y, pred))


def test_evaluation_does_not_depend_on_the_eval_batch_size(data_dir):
  # 1,000 test examples in batches of 300 leaves 200 padded rows that must not count.
  results = []
  for eval_batch_size in (1000, 300):
    c = tiny_config(data_dir)
    c.data.eval_batch_size = eval_batch_size
    ex = make_trainer(c)
    results.append(ex.evaluate(ex.state))
  assert np.array(results[1]["confusion_matrix"]).sum() == 1000
  assert results[0]["confusion_matrix"] == results[1]["confusion_matrix"]
  assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)
