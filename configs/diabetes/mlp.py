"""Regression with mean squared error: scikit-learn's diabetes data (standardised target).

Run:    python -m bigmodel.train --config=configs/diabetes/mlp.py --workdir=runs/diabetes_mlp
Expect: test R² 0.53, MSE 0.47 (standardised target); 7 s for the whole command on a
        2-core CPU (measured 2026-11-23).
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.data = dict(name="diabetes", batch_size=32, eval_batch_size=88)
  c.model = dict(name="mlp", width=32, depth=1, dropout=0.1)
  c.loss = "mse"
  c.optimizer = dict(name="adamw", learning_rate=3e-3, weight_decay=1e-3, schedule="cosine")
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 1000
  return config_lib.resolve(c)
