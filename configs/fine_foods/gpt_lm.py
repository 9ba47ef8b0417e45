"""Pretraining: a small GPT language model on the fine-food review texts (labels unused).

The first half of pretrain -> fine-tune; see gpt_finetune.py. Offline data: Debian's
r-cran-modeldata (apt-get install -y --no-install-recommends r-cran-modeldata); the
4,000 training reviews only, so the test reviews stay unseen. BPE tokenizer (1,024 pieces)
trained on the same text and saved in the workdir.
Run:    python -m bigmodel.train --config=configs/fine_foods/gpt_lm.py --workdir=runs/fine_foods_lm
Expect: val loss 4.18 nats per BPE token (perplexity 65, 2.30 bits per byte) after 600 steps, about
        4 min on a 2-core CPU (measured 2026-11-23).
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.data = dict(name="fine_foods_text", tokenizer="bpe", vocab_size=1024, seq_len=128, batch_size=16,
                eval_batch_size=64, eval_split="val")
  c.model = dict(name="gpt", num_layers=4, num_heads=4, dim=128, max_len=128, dropout=0.1)
  c.loss = "lm_xent"
  c.optimizer = dict(name="adamw", learning_rate=1e-3, b2=0.99, schedule="warmup_cosine", warmup_steps=100,
                     min_lr_ratio=0.1, weight_decay=0.1, grad_clip_norm=1.0)
  c.total_steps = 600
  c.log_every = 50
  c.eval_every = 300
  c.checkpoint_every = 200
  return config_lib.resolve(c)
