"""MNIST-1D, the paper's GRU: bidirectional, hidden size 6, the head reads all 40 steps.

Run:    python -m bigmodel.train --config=configs/mnist1d/gru.py --workdir=runs/mnist1d_gru
Expect: 91.5 ± 0.5 % test accuracy over seeds 0-4 (92.3 / 91.4 / 91.0 / 91.5 / 91.1 %; paper 91 %,
        PyTorch's nn.GRU 91.3-91.8 %); 14.8-16.7 s for the whole command on a 2-core CPU, 13-15 s a
        run inside `python -m experiments.mnist1d.run --models=gru --seeds=0,1,2,3,4` (measured
        2026-12-01).

The cell is torch.nn.GRU's (`cell="gru_torch"`). Flax's GRUCell, the same function initialised
otherwise, reached 89.4 ± 0.7 % on the same seeds (90.3 / 90.0 / 89.1 / 88.3 / 89.5 %); with
torch's uniform input kernels alone 91.1 ± 1.3 %; torch's cell with flax's initialisation
89.9 ± 1.5 %; gradient clipping at norm 1 did not help (flax's cell 89.8 ± 1.4 %, torch's 90.7 ± 1.5 %).
"""
from configs.mnist1d import common


def get_config():
  return common.resolved(common.paper_setup(name="gru", cell="gru_torch", hidden=6, bidirectional=True,
                                            readout="flatten"))
