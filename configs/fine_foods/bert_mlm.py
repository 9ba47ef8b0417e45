"""Pretraining: a small BERT-style encoder with masked-LM on the fine-food review texts (labels unused).

The first half of pretrain -> fine-tune for bert_finetune.py. The same 4 x 128 Transformer, text,
BPE tokenizer (1,024 pieces) and steps as gpt_lm.py, but bidirectional (`causal=False`) and
trained to recover the 15 % of tokens that are masked (data/mlm.py; the [MASK] id is 1,024, one
past the BPE vocabulary, so the embedding has 1,025 rows). Offline data: Debian's
r-cran-modeldata; the 4,000 training reviews only, so the test reviews stay unseen.
Run:    python -m bigmodel.train --config=configs/fine_foods/bert_mlm.py --workdir=runs/fine_foods_mlm
Expect: not measured as written (4 blocks, 128-token windows). In experiments/transfer/ (2 blocks,
        64-token windows, 600 steps): masked-token loss 5.52 nats, masked-token accuracy 11.0 % on the
        validation text, 2.9 min on a 2-core CPU shared with other jobs (measured 2026-12-02).
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.data = dict(name="fine_foods_text", tokenizer="bpe", vocab_size=1024, seq_len=128, batch_size=16,
                eval_batch_size=64, eval_split="val", mlm_mask_rate=0.15)
  c.model = dict(name="gpt", causal=False, num_layers=4, num_heads=4, dim=128, max_len=128, dropout=0.1)
  c.loss = "lm_xent"  # with data.mlm_mask_rate > 0: the masked-LM task (tasks.py)
  c.optimizer = dict(name="adamw", learning_rate=1e-3, b2=0.99, schedule="warmup_cosine", warmup_steps=100,
                     min_lr_ratio=0.1, weight_decay=0.1, grad_clip_norm=1.0)
  c.total_steps = 600
  c.log_every = 50
  c.eval_every = 300
  c.checkpoint_every = 200
  return config_lib.resolve(c)
