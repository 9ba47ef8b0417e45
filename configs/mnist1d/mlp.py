"""MNIST-1D, the paper's MLP: width 100, two hidden layers, the second residual.

Run:    python -m bigmodel.train --config=configs/mnist1d/mlp.py --workdir=runs/mnist1d_mlp
Expect: 65.4 % test accuracy (seeds 0-2: 66.0 ± 0.8 %; paper 68 %); 7.5-7.7 s for the whole
        command on a 2-core CPU, PyTorch 13.3-15.0 s (measured 2026-11-23, benchmarks/RESULTS.md).
"""
from configs.mnist1d import common


def get_config():
  return common.resolved(common.paper_setup(name="mlp", width=100, depth=2, residual=True))
