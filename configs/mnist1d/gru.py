"""MNIST-1D, the paper's GRU: bidirectional, hidden size 6, the head reads all 40 steps.

Run:    python -m bigmodel.train --config=configs/mnist1d/gru.py --workdir=runs/mnist1d_gru
Expect: 90.1 % test accuracy (seeds 0-2: 90.1 / 78.2 / 90.1 %; paper 91 %: seed 1 was at 90 %
        until a loss spike in its last 250 steps, Adam at a constant 1e-2); 31.7-37.7 s for the
        whole command on a 2-core CPU, PyTorch 166-214 s (measured 2026-11-23, benchmarks/RESULTS.md).
"""
from configs.mnist1d import common


def get_config():
  return common.resolved(common.paper_setup(name="gru", hidden=6, bidirectional=True, readout="flatten"))
