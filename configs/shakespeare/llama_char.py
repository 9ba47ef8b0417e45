"""Character-level Llama on Shakespeare's plays: gpt_char.py's recipe with the Llama block.

llama_tiny: 4 layers, 4 query and 2 key/value heads, 128-dim, RMSNorm, rotary positions, SwiGLU
(384 wide: about a 4 x 128 GELU MLP's parameters); context 64, batch 12, 2,000 steps, no dropout,
and gpt_char's AdamW recipe, so that the two blocks compare on the same budget.
Run:    python -m bigmodel.train --config=configs/shakespeare/llama_char.py --workdir=runs/shakespeare_llama_char
        python -m bigmodel.generate --workdir=runs/shakespeare_llama_char --prompt="ROMEO:" --max_new_tokens=200
Expect: val loss 1.628 (bits per byte 2.35) after 2,000 steps, seed 0 (2026-12-03, 2-core AMD EPYC);
        gpt_char.py in the same session: 1.855 (docs/language-models.md).
"""
from bigmodel import models
from configs.shakespeare import gpt_char


def get_config():
  c = gpt_char.get_config()
  c.model = {**models.defaults("llama_tiny"), "name": "llama_tiny", "dropout": 0.0}  # the block swapped, nothing else
  return c
