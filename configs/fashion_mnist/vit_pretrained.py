"""Fashion-MNIST fine-tuned from ViT-B/16 pretrained on ImageNet-21k (google/vit-base-patch16-224).

Setup:  apt-get install -y dataset-fashion-mnist
The 28x28 grey images are resized to 64x64 inside the model (model.image_size), so 16 patches of
16x16; the checkpoint's 14x14 grid of position embeddings is interpolated to 4x4, and its RGB
patch kernel summed over channels (a grey image = the same image in R, G and B).
Run:    python -m bigmodel.train --config=configs/fashion_mnist/vit_pretrained.py --workdir=runs/fashion_vit_b
Expect: not measured: this machine cannot download the checkpoint. The test suite runs this config
        on a tiny ViT that transformers makes (tests/test_huggingface.py). 1,000 steps.
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.init = dict(hf="google/vit-base-patch16-224")
  c.data = dict(name="fashion_mnist_local", batch_size=64, normalize=True)
  c.model = dict(image_size=64)
  c.optimizer = dict(name="adamw", learning_rate=1e-4, schedule="warmup_cosine", warmup_steps=100,
                     weight_decay=0.01, grad_clip_norm=1.0)
  c.total_steps = 1000
  c.log_every = 50
  c.eval_every = 1000
  c.checkpoint_every = 250
  return config_lib.resolve(c)
