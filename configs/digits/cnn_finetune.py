"""Fine-tuning: sklearn's digits at 28x28 (`digits28`) with the CNN of configs/fashion_mnist/cnn.py,
its weights loaded by name from a Fashion-MNIST run; the 10-class `head` starts afresh (init.reinit).

For the from-scratch baseline, add --config.init.checkpoint= (same model, steps and data). With a
label budget, --config.data.train_examples=100 trains on 100 of the 1,438 training digits (about
10 per class, stratified); the 359 test digits are evaluated whole. No flips: a flipped digit is
another digit.
Run:    python -m bigmodel.train --config=configs/fashion_mnist/cnn.py --workdir=runs/fashion_cnn
        python -m bigmodel.train --config=configs/digits/cnn_finetune.py --workdir=runs/digits_ft
Expect: not measured as written (300 steps, all 1,438 digits). In experiments/transfer/ (from a 400-step
        Fashion-MNIST run at 87.9 %; 60 / 157 steps; seeds 0-2): 91.6 / 96.8 % test accuracy with 100 / 500
        labels, from scratch 90.4 / 96.9 % (measured 2026-12-02, 2-core CPU, 10-20 s a run).
"""
import ml_collections

from bigmodel import config as config_lib

PRETRAINED = "runs/fashion_cnn"


def get_config():
  c = ml_collections.ConfigDict()
  c.data = dict(name="digits28", batch_size=32, eval_batch_size=359, normalize=True)
  c.model = dict(name="cnn2d", channels=(32, 64), kernel_sizes=(3, 3), strides=(1, 1), padding=1,
                 pool=2, hidden=128, dropout=0.25)
  c.init = dict(checkpoint=PRETRAINED)
  c.optimizer = dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=20,
                     weight_decay=1e-4)
  c.total_steps = 300
  c.log_every = 50
  c.eval_every = 300
  c.checkpoint_every = 300
  return config_lib.resolve(c)
