"""MNIST-1D, logistic regression (a linear layer on the 40 raw values).

Run:    python -m bigmodel.train --config=configs/mnist1d/logreg.py --workdir=runs/mnist1d_logreg
Expect: TBD
"""
from configs.mnist1d import common


def get_config():
  return common.resolved(common.paper_setup(name="logistic_regression"))
