"""Fine-tuning: review sentiment ("great" vs "other") with the encoder pretrained by bert_mlm.py.

The encoder loads by parameter name from the masked-LM run, a fresh `head` reads the mean of the
final hidden states; the tokenizer is the pretraining run's, and `vocab_size` keeps its [MASK]
row so the embedding's shape matches the checkpoint's. transformer.py is the same encoder from
random weights.
Run:    python -m bigmodel.train --config=configs/fine_foods/bert_mlm.py --workdir=runs/fine_foods_mlm
        python -m bigmodel.train --config=configs/fine_foods/bert_finetune.py --workdir=runs/fine_foods_bert_ft
Expect: not measured as written (4 blocks, 128 tokens, 500 steps). In experiments/transfer/ (2 blocks,
        the first 64 tokens, 40-150 steps, seeds 0-2): 61.6 / 66.3 / 71.0 % test accuracy with 100 / 500 /
        4,000 labels; always answering "great": 65.8 % (measured 2026-12-02, 2-core CPU, ~26 s a run).
"""
import ml_collections

from bigmodel import config as config_lib

PRETRAINED = "runs/fine_foods_mlm"


def get_config():
  c = ml_collections.ConfigDict()
  c.data = dict(name="fine_foods", tokenizer=PRETRAINED, seq_len=128, batch_size=16, eval_batch_size=200,
                eval_split="test")
  c.model = dict(name="gpt", causal=False, num_layers=4, num_heads=4, dim=128, max_len=128, dropout=0.1,
                 pool="mean", vocab_size=1025)  # the 1,024 BPE pieces and masked-LM's [MASK]
  c.init = dict(checkpoint=PRETRAINED)
  c.optimizer = dict(name="adamw", learning_rate=3e-4, schedule="warmup_cosine", warmup_steps=50,
                     weight_decay=0.01, grad_clip_norm=1.0)
  c.total_steps = 500  # 2 epochs of the 4,000 training reviews
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 250
  return config_lib.resolve(c)
