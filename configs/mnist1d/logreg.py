"""MNIST-1D, logistic regression (a linear layer on the 40 raw values).

Run:    python -m bigmodel.train --config=configs/mnist1d/logreg.py --workdir=runs/mnist1d_logreg
Expect: 33.0 % test accuracy (seeds 0-2: 31.9 ± 0.9 %; paper 32 %); 5.0-5.9 s for the whole
        command on a 2-core CPU, PyTorch 8.2-9.3 s (measured 2026-11-23, benchmarks/RESULTS.md).
"""
from configs.mnist1d import common


def get_config():
  return common.resolved(common.paper_setup(name="logistic_regression"))
