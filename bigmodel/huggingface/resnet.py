"""ResNet (`ResNetModel`, `ResNetForImageClassification`: microsoft/resnet-*) <-> models/resnet.py's
ResNet with `padding=symmetric`: OIHW convolutions as HWIO, BatchNorm's running statistics into
`batch_stats`, the stride in the 3x3 convolution. Import only."""
from bigmodel import errors
from bigmodel.huggingface.tensors import Tensors, dense, same
from bigmodel.models import resnet

MODEL_TYPE = "resnet"
ARCHITECTURES = ("ResNetModel", "ResNetForImageClassification")
MODEL = resnet.ResNet
PREFIX = "resnet."


def model_config(hf, require):
  require("hidden_act", ("relu",), "its blocks use another activation")
  require("downsample_in_first_stage", (False,), "its first stage halves the resolution")
  require("downsample_in_bottleneck", (False,), "its bottlenecks stride in the first 1x1 convolution")
  block = hf["layer_type"]
  expansion = {"basic": 1, "bottleneck": 4}[block]
  width = hf["hidden_sizes"][0] // expansion
  if hf["embedding_size"] != width or hf["hidden_sizes"] != [width * expansion * 2 ** i
                                                             for i in range(len(hf["hidden_sizes"]))]:
    raise errors.UserError(f"This ResNet's widths (embedding_size={hf['embedding_size']}, hidden_sizes="
                           f"{hf['hidden_sizes']}) do not double stage by stage from its stem, as bigmodel's "
                           "ResNet does.")
  return dict(name="resnet", stage_sizes=tuple(hf["depths"]), block=block, width=width, stem="imagenet",
              padding="symmetric", bn_momentum=0.9)


def conv(name):
  """A torch conv weight (O, I, H, W) as a flax kernel (H, W, I, O). A 3-channel (RGB) stem loads into a
  1-channel model summed over its channels: the same output as the grey image copied into R, G and B."""
  def load(a, shape):
    kernel = a[0].transpose(2, 3, 1, 0)
    return kernel.sum(2, keepdims=True) if shape[2] == 1 and kernel.shape[2] != 1 else kernel
  return Tensors((name,), load, lambda x: (x.transpose(3, 2, 0, 1),))


def table(m):
  def conv_bn(ours_conv, ours_bn, theirs):
    return {f"params/{ours_conv}/kernel": conv(f"{theirs}.convolution.weight"),
            f"params/{ours_bn}/scale": same(f"{theirs}.normalization.weight"),
            f"params/{ours_bn}/bias": same(f"{theirs}.normalization.bias"),
            f"batch_stats/{ours_bn}/mean": same(f"{theirs}.normalization.running_mean"),
            f"batch_stats/{ours_bn}/var": same(f"{theirs}.normalization.running_var")}

  t = {**conv_bn("stem_conv", "stem_bn", "resnet.embedder.embedder"), **dense("head", "classifier.1", head="classifier")}
  convs = 3 if m["block"] == "bottleneck" else 2
  for i, n in enumerate(m["stage_sizes"]):
    for j in range(n):
      ours, theirs = f"stage{i}_block{j}", f"resnet.encoder.stages.{i}.layers.{j}"
      for k in range(convs):
        t |= conv_bn(f"{ours}/conv{k}", f"{ours}/bn{k}", f"{theirs}.layer.{k}")
      t |= conv_bn(f"{ours}/proj", f"{ours}/proj_bn", f"{theirs}.shortcut")
  return t
