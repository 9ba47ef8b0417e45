"""OpenAI's GPT-2 (124 M) fine-tuned as a language model on Shakespeare's plays, with GPT-2's own tokenizer.

The model, its sizes and its byte-level BPE come from the checkpoint (init.hf); nothing is new, the
LM head is the tied token embedding. Generate from it, or hand it back to transformers:
Run:    python -m bigmodel.train --config=configs/shakespeare/gpt2_finetune.py --workdir=runs/shakespeare_gpt2
        python -m bigmodel.generate --workdir=runs/shakespeare_gpt2 --prompt="ROMEO:" --greedy
        python -m bigmodel.export --workdir=runs/shakespeare_gpt2 --out=runs/shakespeare_gpt2_hf --format=hf
Expect: not measured: this machine cannot download gpt2. The test suite runs these three commands
        on a tiny GPT-2 that transformers makes (tests/test_huggingface.py). 500 steps of 8 x 256 tokens.
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.init = dict(hf="gpt2")
  c.data = dict(name="shakespeare", seq_len=256, batch_size=8, eval_batch_size=32, eval_split="val")
  c.model = dict(dropout=0.1)
  c.loss = "lm_xent"
  c.optimizer = dict(name="adamw", learning_rate=1e-4, schedule="warmup_cosine", warmup_steps=50,
                     weight_decay=0.01, grad_clip_norm=1.0)
  c.total_steps = 500
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 250
  return config_lib.resolve(c)
