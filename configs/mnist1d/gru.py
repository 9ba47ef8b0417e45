"""MNIST-1D, the paper's GRU: bidirectional, hidden size 6, the head reads all 40 steps.

Run:    python -m bigmodel.train --config=configs/mnist1d/gru.py --workdir=runs/mnist1d_gru
Expect: TBD
"""
from configs.mnist1d import common


def get_config():
  return common.resolved(common.paper_setup(name="gru", hidden=6, bidirectional=True, readout="flatten"))
