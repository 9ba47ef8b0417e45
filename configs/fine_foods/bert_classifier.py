"""Review sentiment ("great" vs "other") fine-tuned from BERT-base uncased, read with its WordPiece tokenizer.

The post-LayerNorm BERT of the paper (models/bert.py); its pooler reads [CLS] and a new `head`
classifies. With a network the hub id downloads once; offline, give a directory that holds what
save_pretrained wrote: --config.init.hf=/path/to/bert.
Run:    python -m bigmodel.train --config=configs/fine_foods/bert_classifier.py --workdir=runs/fine_foods_bert
Expect: not measured: this machine cannot download bert-base-uncased. The test suite runs this
        config on a tiny BERT that transformers makes (tests/test_huggingface.py). 500 steps.
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.init = dict(hf="bert-base-uncased")
  c.data = dict(name="fine_foods", seq_len=128, batch_size=16, eval_batch_size=200, eval_split="test")
  c.model = dict(pool="cls", dropout=0.1)
  c.optimizer = dict(name="adamw", learning_rate=3e-5, schedule="warmup_cosine", warmup_steps=50,
                     weight_decay=0.01, grad_clip_norm=1.0)
  c.total_steps = 500  # 2 epochs of the 4,000 training reviews
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 250
  return config_lib.resolve(c)
