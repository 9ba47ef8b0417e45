"""The pieces of experiments/transfer/: digits read as Fashion-MNIST is, and pretrained encoders that load
into their classifiers by name."""
import importlib

import jax
import numpy as np
import pytest

from bigmodel import config as config_lib, starting_weights, workdir as workdir_lib
from bigmodel.data import builders, fashion_mnist, sklearn_sets
from bigmodel.train import train_and_evaluate
from conftest import make_trainer


def config(path):
  return importlib.import_module(path[:-3].replace("/", ".")).get_config()


def test_digits28_are_the_digits_upsampled_to_fashion_mnists_shape_and_scale(data_dir):
  assert sklearn_sets.Digits28._features(None)["x"].shape == fashion_mnist.FashionMnistLocal._features(None)["x"].shape
  small, big = (builders.builder_class(name)(data_dir=data_dir, file_format="array_record") for name in ("digits", "digits28"))
  for builder in (small, big):
    builder.download_and_prepare()
  small, big = small.as_data_source("test"), big.as_data_source("test")
  assert len(small) == len(big) == 359
  x8, x28 = (np.stack([r["x"] for r in s.__getitems__(list(range(50)))]) for s in (small, big))
  assert x28.shape == (50, 28, 28, 1) and x28.dtype == np.uint8 and x28.max() == 255
  # Same examples in the same order: shrunk back to 8x8, each image is much closer to its own 8x8 original
  # than to the next one's.
  back = np.asarray(jax.image.resize(x28[..., 0] / 255.0, (50, 8, 8), "linear"))
  own, other = (np.abs(back - x8[..., 0][order]).mean() for order in (np.arange(50), np.roll(np.arange(50), 1)))
  assert own < 0.6 * other, (own, other)
  assert [r["y"] for r in small.__getitems__(list(range(50)))] == [r["y"] for r in big.__getitems__(list(range(50)))]


def test_a_cnn_trained_on_fashion_mnist_shaped_images_loads_into_the_digits_config_with_a_new_head(data_dir, tmp_path):
  pretrain = config("configs/fashion_mnist/cnn.py")
  pretrain.data.update(name="digits28", data_dir=data_dir, augment=())  # the same image shape as Fashion-MNIST
  pretrain.update(total_steps=5, log_every=5, eval_every=5, checkpoint_every=5)
  pretrain.optimizer.warmup_steps = 1
  train_and_evaluate(pretrain, str(tmp_path / "pretrain"))
  c = config("configs/digits/cnn_finetune.py")
  c.data.update(data_dir=data_dir, train_examples=100)
  c.init.checkpoint = str(tmp_path / "pretrain")
  ex = make_trainer(c)
  params, _, message = starting_weights.load(config_lib.resolve(c).init, None, ex.state.params, {}, None)
  assert "Initialised 6 arrays" in message and "fresh: head/bias, head/kernel" in message, message
  stored, _, _ = workdir_lib.read_weights(str(tmp_path / "pretrain"), None)
  np.testing.assert_array_equal(params["dense"]["kernel"], stored["dense"]["kernel"])
  assert not np.allclose(params["head"]["kernel"], stored["head"]["kernel"])


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
@pytest.mark.needs("fine_foods")
def test_a_masked_lm_encoder_loads_into_the_bert_classifier_with_its_mask_row(data_dir, tmp_path):
  tiny = dict(num_layers=1, num_heads=2, dim=32, max_len=32)
  mlm = config("configs/fine_foods/bert_mlm.py")
  mlm.data.update(seq_len=32, vocab_size=400, data_dir=data_dir)
  mlm.model.update(tiny)
  mlm.update(total_steps=3, log_every=3, eval_every=3, checkpoint_every=3)
  mlm.optimizer.warmup_steps = 1
  final = train_and_evaluate(mlm, str(tmp_path / "mlm"))
  assert np.isfinite(final["loss"]) and "accuracy" in final  # masked-token accuracy: the masked-LM task
  c = config("configs/fine_foods/bert_finetune.py")
  c.data.update(seq_len=32, data_dir=data_dir, tokenizer=str(tmp_path / "mlm"), train_examples=64)
  c.model.update(tiny, vocab_size=401)  # the 400 BPE pieces and [MASK]
  c.init.checkpoint = str(tmp_path / "mlm")
  ex = make_trainer(c)
  params, _, message = starting_weights.load(config_lib.resolve(c).init, None, ex.state.params, {}, None)
  assert "fresh: head/bias, head/kernel" in message, message
  stored, _, _ = workdir_lib.read_weights(str(tmp_path / "mlm"), None)
  assert params["embed"]["embedding"].shape == (401, 32)
  np.testing.assert_array_equal(params["embed"]["embedding"], stored["embed"]["embedding"])
  # Without the [MASK] row the shapes differ, and the error names the embedding.
  c.model.vocab_size = 0
  with pytest.raises(ValueError, match=r"embed/embedding: checkpoint has \(401, 32\), this model \(400, 32\)"):
    train_and_evaluate(c, str(tmp_path / "wrong"))
