"""ResNet-50 on ImageNet-1k (ILSVRC 2012), flax's imagenet example's recipe: SGD + Nesterov 0.9, learning rate
0.1 x batch / 256 with 5 warmup epochs then cosine, weight decay 1e-4, 100 epochs, bfloat16 compute.

Data (TFDS name `imagenet2012`; a manual download: TFDS cannot fetch it): get ILSVRC2012_img_train.tar
and ILSVRC2012_img_val.tar from https://image-net.org (an account, accepting its terms), then lay them out as
class folders, which `data.name=image_folder` reads (TFDS's `imagenet2012` builder would want the tars in
~/tensorflow_datasets/downloads/manual/ and TensorFlow to encode them, and its images vary in size):
        mkdir -p imagenet/train && tar -xf ILSVRC2012_img_train.tar -C imagenet/train && cd imagenet/train \
            && for t in *.tar; do mkdir "${t%.tar}" && tar -xf "$t" -C "${t%.tar}" && rm "$t"; done
        # val: 50,000 JPEGs into imagenet/val/<wnid>/ with the devkit's labels (e.g. soumith's valprep.sh)
        python -m bigmodel.prepare_images --folder=imagenet --image_size=224   # ~193 GB of uint8 shards,
        #   every core (bigmodel/data/image_folder.py); a training run would do it on first use
Run:    python -m bigmodel.train --config=configs/imagenet/resnet50.py --workdir=runs/imagenet_resnet50 \
            --config.data.folder=imagenet
        (1.28 M images, 193 GB decoded: over data.memory_mb, so streamed from the shards by data.workers
        processes, each host reading its own rows of every batch)
Batch:  1,024 (128 per device on 8), 1,251 steps an epoch, 125,100 steps.
Pre-flight (8 devices, data-parallel: the trainer's own report, compiled for 8 simulated CPU devices, 2026-12-05):
        25,557,032 parameters; per device params 97.5 MB, SGD momentum 97.5 MB, XLA CPU temporaries 12.9 GB
        for 128 images of 224 x 224 in bfloat16 (the CPU compiler's; an accelerator's differ): fits 40 GB;
        3.06 TFLOP a step per device by XLA's count, 24 GFLOP an image (compiled in 161 s on this CPU).
Input:  what a device consumes is what the host must deliver. flax's v100_x8_mixed_precision run did 62,499
        steps of 2,048 in 5.0 h: 7,100 images/s, ~900 a V100. From the 24 GFLOP an image, at 40 % of bf16 peak
        an A100 (312 TFLOP/s) takes ~5,000 images/s and an H100 (989) ~16,000. bigmodel's host pipeline
        delivered 425 images/s on 2 shared cores (load ~10) with crop + flip + normalise
        (benchmarks/input_pipeline.py, RESULTS.md), ~210 a core: at that rate ~5 cores per V100, ~25 per A100,
        ~75 per H100 (more than its host has: not measured on an idle many-core host yet).
Expect: flax reports 76.7 % top-1 (v100_x8, 250 k steps of 512, 13.7 h on 8 V100) and 76.5 % (mixed precision);
        big_vision's ViT-S/16 reaches 76.5 % in 90 epochs and ~80 % in 300. Both use Inception crops
        (random-resized crops) and evaluate a centre crop of a 256-px resize; bigmodel has only pad-and-crop and
        resizes to 224 squares when preparing, so expect a few points less until it has them. Not run here: this
        machine has no accelerator and no ImageNet; tests/test_images.py trains this config two steps on a small
        folder.
"""
from bigmodel import config as config_lib
from configs.imagenet.common import EPOCH, setup


def get_config():
  c = setup()
  c.model = dict(name="resnet50", stem="imagenet", dtype="bfloat16")
  c.optimizer = dict(name="sgd", learning_rate=0.1 * 1024 / 256, momentum=0.9, nesterov=True,
                     schedule="warmup_cosine", warmup_steps=5 * EPOCH, weight_decay=1e-4)
  c.total_steps = 100 * EPOCH
  return config_lib.resolve(c)
