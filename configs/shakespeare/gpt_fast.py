"""Character-level GPT on Shakespeare's plays, tuned to reach nanoGPT's CPU-recipe loss sooner.

nanoGPT's recipe (configs/shakespeare/gpt_char.py: 4 layers, lr 1e-3, 2,000 steps) spends
8 TFLOP to reach val loss ~1.88. This one trains a 3-layer model (128 wide, 4 heads, context 64,
batch 12) at lr 6e-3 for 1,000 steps: fewer FLOPs per token and far fewer steps. 100 steps run
per dispatch with the 4.3 M training characters on the device, and the full validation split
(0.47 M characters) is evaluated once, at the end.
Run:    python -m bigmodel.train --config=configs/shakespeare/gpt_fast.py --workdir=runs/shakespeare_fast
Expect: val loss 1.8586 (bits per byte 2.681) in 73-84 s for the whole command on a 2-core CPU,
        62 s with a warm compilation cache; nanoGPT's recipe took 147-170 s beside it for 1.8646
        (measured 2026-11-23, benchmarks/RESULTS.md).
"""
from configs.shakespeare import gpt_char


def get_config():
  c = gpt_char.get_config()
  c.model.num_layers = 3
  c.optimizer.learning_rate = 6e-3
  c.total_steps = 1000
  c.eval_every = 1000
  c.checkpoint_every = 500
  c.steps_per_call = 100
  return c
