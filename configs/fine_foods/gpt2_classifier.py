"""Review sentiment ("great" vs "other") fine-tuned from OpenAI's GPT-2 (124 M), read with GPT-2's tokenizer.

The architecture, sizes and tokenizer come from the checkpoint (init.hf); the classifier `head` on
the last real token is new. With a network the hub id downloads once; offline, give a directory
that holds what save_pretrained wrote: --config.init.hf=/path/to/gpt2.
Run:    python -m bigmodel.train --config=configs/fine_foods/gpt2_classifier.py --workdir=runs/fine_foods_gpt2
Expect: not measured: this machine cannot download gpt2. The test suite runs this config on a tiny
        GPT-2 that transformers makes (tests/test_huggingface.py). ~0.2 M tokens; 500 steps.
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.init = dict(hf="gpt2")
  c.data = dict(name="fine_foods", seq_len=128, batch_size=16, eval_batch_size=200, eval_split="test")
  c.model = dict(pool="last", dropout=0.1)
  c.optimizer = dict(name="adamw", learning_rate=5e-5, schedule="warmup_cosine", warmup_steps=50,
                     weight_decay=0.01, grad_clip_norm=1.0)
  c.total_steps = 500  # 2 epochs of the 4,000 training reviews
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 250
  return config_lib.resolve(c)
