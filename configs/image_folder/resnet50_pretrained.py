"""Your own images, fine-tuned from ResNet-50 pretrained on ImageNet (microsoft/resnet-50).

Put the images in <folder>/train/<class>/*.png|jpg and <folder>/test/<class>/...: each subfolder
is a class. They are resized to 224x224 RGB; BatchNorm keeps the checkpoint's running statistics
as its starting point; the 1000-class ImageNet head is replaced by one for your classes.
Run:    python -m bigmodel.train --config=configs/image_folder/resnet50_pretrained.py --workdir=runs/my_images \\
            --config.data.folder=/path/to/images
Expect: not measured: this machine cannot download the checkpoint. The test suite runs this config
        on a tiny ResNet that transformers makes and a folder it writes (tests/test_huggingface.py).
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.init = dict(hf="microsoft/resnet-50")
  c.data = dict(name="image_folder", folder="", image_size=224, channels=3, normalize=True, batch_size=32,
                eval_batch_size=64, augment=("flip",))
  c.optimizer = dict(name="sgd", learning_rate=0.01, momentum=0.9, schedule="cosine", weight_decay=1e-4)
  c.total_steps = 500
  c.log_every = 20
  c.eval_every = 500
  c.checkpoint_every = 100
  return config_lib.resolve(c)
