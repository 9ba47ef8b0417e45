"""Hugging Face checkpoints: every family computes what transformers computes, tokenizers give its ids,
exports load back into transformers, and bad checkpoints are named. Every checkpoint here is made by
transformers itself, tiny and random, in a temporary directory: nothing is downloaded."""
import importlib
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bigmodel import (artifact, export, generate, huggingface, models, paths, runs, tokenizers,  # noqa: E402
                      workdir as workdir_lib)
from bigmodel.train import train_and_evaluate  # noqa: E402
from conftest import ROOT, run_cli  # noqa: E402
from test_vision import write_digit_folder  # noqa: E402
from hf_checkpoints import (bert_dir, gpt2_dir, save, text, tiny_resnet, tiny_vit,  # noqa: E402,F401 (fixtures)
                            vit_config)

SAMPLES = ["Café naïve — 🎭 émoji\t\ttabs   and spaces\n\n\nnewlines  ", "ÀÉÎÕÜ ß 日本語 Ünïcödé"]


def relative_error(ours, theirs):
  """Largest difference relative to the reference's scale."""
  return float(np.abs(np.asarray(ours) - np.asarray(theirs)).max() / np.abs(np.asarray(theirs)).max())


def ours(directory, x, reinit=(), **overrides):
  """(our model, variables) for checkpoint `directory`, initialised for inputs like `x`."""
  config = {**huggingface.model_config(directory), **overrides}
  model = models.build(config)
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), x)))
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  params, state, _ = huggingface.load(directory, config, fresh.pop("params"), fresh, reinit)
  return model, {"params": params, **state}


def padded_batch(vocab, lengths=(12, 8, 5)):
  """Token ids with right padding: ours marks it -1; transformers takes an attention mask."""
  ids = np.random.RandomState(0).randint(0, vocab, (len(lengths), max(lengths)))
  mask = np.arange(ids.shape[1])[None] < np.array(lengths)[:, None]
  return np.where(mask, ids, -1).astype(np.int32), torch.tensor(ids), torch.tensor(mask.astype(np.int64)), mask


def test_gpt2_logits_equal_transformers_on_a_padded_batch(gpt2_dir):
  ref = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
  ours_ids, ids, attention, mask = padded_batch(ref.config.vocab_size)
  model, variables = ours(gpt2_dir, ours_ids, num_outputs=ref.config.vocab_size)
  logits = model.apply(variables, ours_ids)
  with torch.no_grad():
    expected = ref(ids, attention_mask=attention).logits.numpy()
  assert relative_error(logits[mask], expected[mask]) < 1e-4


def test_gpt2_loads_into_scanned_blocks_and_saves_back_the_same_tensors(gpt2_dir, tmp_path):
  """model.scan_layers: the checkpoint's layers land in one stacked subtree, and come out again one by one."""
  from safetensors.numpy import load_file
  ref = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
  ours_ids, ids, attention, mask = padded_batch(ref.config.vocab_size)
  model, variables = ours(gpt2_dir, ours_ids, num_outputs=ref.config.vocab_size, scan_layers=True)
  assert variables["params"]["block_stack"]["attn"]["qkv"]["kernel"].shape == (2, 64, 192)
  with torch.no_grad():
    expected = ref(ids, attention_mask=attention).logits.numpy()
  assert relative_error(model.apply(variables, ours_ids)[mask], expected[mask]) < 1e-4
  huggingface.save(str(tmp_path), {**huggingface.model_config(gpt2_dir), "num_outputs": ref.config.vocab_size,
                                   "scan_layers": True}, variables["params"])
  saved = load_file(str(tmp_path / "model.safetensors"))
  original = load_file(os.path.join(gpt2_dir, "model.safetensors"))
  assert "transformer.h.1.attn.c_attn.weight" in saved and set(saved) <= set(original)
  for name, x in saved.items():
    np.testing.assert_array_equal(x, original[name], err_msg=name)


def test_a_wrong_mapping_fails_the_parity_check(gpt2_dir):
  """Swapping q and k, or transposing a square kernel, moves the logits far past the tolerance."""
  ref = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
  ours_ids, ids, attention, mask = padded_batch(ref.config.vocab_size)
  model, variables = ours(gpt2_dir, ours_ids, num_outputs=ref.config.vocab_size)
  with torch.no_grad():
    expected = ref(ids, attention_mask=attention).logits.numpy()[mask]
  D = 64

  def swap_q_k(kernel):
    return np.concatenate([kernel[:, D:2 * D], kernel[:, :D], kernel[:, 2 * D:]], axis=1)

  for path, wrong in (("block0/attn/qkv/kernel", swap_q_k), ("block1/attn/out/kernel", np.transpose)):
    broken = jax.tree_util.tree_map_with_path(
        lambda p, x: wrong(x) if jax.tree_util.keystr(p, simple=True, separator="/") == f"params/{path}" else x,
        variables)
    assert relative_error(model.apply(broken, ours_ids)[mask], expected) > 1e-2, path


def test_gpt2_greedy_generation_with_our_kv_cache_equals_transformers_generate(gpt2_dir):
  ref = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
  prompt = tokenizers.load(gpt2_dir).encode("ROMEO:\nWhat light")[None]
  model, variables = ours(gpt2_dir, prompt, num_outputs=ref.config.vocab_size)
  out = generate.generate(model, variables["params"], prompt, 20, temperature=0.0)
  with torch.no_grad():
    expected = ref.generate(torch.tensor(prompt, dtype=torch.long), max_new_tokens=20, min_new_tokens=20,
                            do_sample=False, pad_token_id=0).numpy()
  np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("architecture", ["BertForMaskedLM", "BertForSequenceClassification", "BertModel"])
def test_bert_logits_equal_transformers_on_a_padded_batch(architecture, tmp_path):
  config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                   intermediate_size=128, vocab_size=97, max_position_embeddings=32, num_labels=3)
  torch.manual_seed(0)
  ref = getattr(transformers, architecture)(config)
  directory = save(ref, tmp_path)
  ours_ids, ids, attention, mask = padded_batch(97)
  pool = "none" if architecture == "BertForMaskedLM" else "cls"
  model, variables = ours(directory, ours_ids, reinit=("^head/",) if architecture == "BertModel" else (),
                          pool=pool, num_outputs=97 if pool == "none" else 3, dropout=0.0)
  with torch.no_grad():
    out = ref(ids, attention_mask=attention)
  if architecture == "BertModel":  # the encoder and pooler load; a fresh head is put on top
    expected = out.pooler_output.numpy()
    pooled = model.apply(variables, ours_ids, capture_intermediates=lambda m, _: m.name == "pooler",
                         mutable=["intermediates"])[1]["intermediates"]["pooler"]["__call__"][0]
    assert relative_error(jnp.tanh(pooled), expected) < 1e-4
    return
  logits = model.apply(variables, ours_ids)
  if pool == "none":
    assert relative_error(logits[mask], out.logits.numpy()[mask]) < 1e-4
  else:
    assert relative_error(logits, out.logits.numpy()) < 1e-4


def images(channels=3, size=32):
  return np.random.RandomState(0).rand(2, size, size, channels).astype(np.float32)


def test_vit_logits_equal_transformers(tmp_path):
  torch.manual_seed(0)
  ref = transformers.ViTForImageClassification(vit_config())
  directory = save(ref, tmp_path)
  x = images()
  model, variables = ours(directory, x, num_outputs=3)
  with torch.no_grad():
    expected = ref(torch.tensor(x.transpose(0, 3, 1, 2))).logits.numpy()
  assert relative_error(model.apply(variables, x), expected) < 1e-4


def test_a_grey_image_gives_what_the_rgb_checkpoint_gives_its_three_channel_copy(tmp_path):
  torch.manual_seed(0)
  ref = transformers.ViTForImageClassification(vit_config())
  directory = save(ref, tmp_path)
  grey = images(channels=1)
  model, variables = ours(directory, grey, num_outputs=3)
  assert variables["params"]["patch_embed"]["kernel"].shape == (8 * 8 * 1, 64)
  with torch.no_grad():
    expected = ref(torch.tensor(np.repeat(grey, 3, -1).transpose(0, 3, 1, 2))).logits.numpy()
  assert relative_error(model.apply(variables, grey), expected) < 1e-4


def test_vit_position_embeddings_are_interpolated_in_2d_at_another_image_size(tmp_path):
  torch.manual_seed(0)
  ref = transformers.ViTModel(vit_config())
  with torch.no_grad():  # a 4x4 grid that rises along rows and is constant along columns
    rows = torch.arange(4.0).repeat_interleave(4)[:, None].expand(16, 64)
    ref.embeddings.position_embeddings[0, 1:] = rows
    ref.embeddings.position_embeddings[0, 0] = 7.0
  ref.save_pretrained(str(tmp_path))
  _, variables = ours(str(tmp_path), images(size=64), num_outputs=3)  # 8x8 patches
  pos = np.asarray(variables["params"]["pos_embed"])
  assert pos.shape == (1 + 64, 64)
  np.testing.assert_array_equal(pos[0], 7.0)  # the class token's row is kept
  grid = pos[1:, 0].reshape(8, 8)
  np.testing.assert_allclose(grid, grid[:, :1].repeat(8, 1), atol=1e-6)  # still constant along columns
  # Bilinear, half-pixel centres: new row r samples old row (r + 0.5) / 2 - 0.5, clamped at the edges.
  np.testing.assert_allclose(grid[:, 0], np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3), atol=1e-5)


@pytest.mark.parametrize("layer_type,hidden_sizes", [("bottleneck", [32, 64]), ("basic", [8, 16])])
def test_resnet_in_eval_mode_equals_transformers_with_its_running_statistics(layer_type, hidden_sizes, tmp_path):
  torch.manual_seed(0)
  ref = transformers.ResNetForImageClassification(transformers.ResNetConfig(
      embedding_size=8, hidden_sizes=hidden_sizes, depths=[2, 1], layer_type=layer_type, num_labels=3))
  directory = save(ref, tmp_path)
  x = images()
  model, variables = ours(directory, x, num_outputs=3)
  assert float(np.abs(variables["batch_stats"]["stem_bn"]["mean"]).max()) > 0  # statistics came along
  with torch.no_grad():
    expected = ref(torch.tensor(x.transpose(0, 3, 1, 2))).logits.numpy()
  assert relative_error(model.apply(variables, x, train=False), expected) < 1e-4


@pytest.mark.parametrize("which", ["gpt2", "bert"])
def test_the_checkpoints_tokenizer_gives_autotokenizers_ids(which, gpt2_dir, bert_dir):
  directory = gpt2_dir if which == "gpt2" else bert_dir
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  tok = tokenizers.load(directory)
  assert tok.kind == "hf" and tok.vocab_size == len(reference)
  for sample in [text()[10_000:11_000], *SAMPLES]:
    ids = tok.encode(sample)
    assert ids.tolist() == reference(sample)["input_ids"]
    assert tok.decode(ids) == reference.decode(ids.tolist())
    if which == "gpt2":  # byte-level BPE is lossless
      assert tok.decode(ids) == sample
  if which == "bert":
    assert tok.mask_id == reference.mask_token_id


def test_an_unsupported_architecture_is_refused_with_the_supported_ones(tmp_path):
  transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
      num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32,
      vocab_size=50)).save_pretrained(str(tmp_path / "neox"))
  with pytest.raises(ValueError, match=r"GPTNeoXForCausalLM.*not supported\. Supported: GPT2LMHeadModel, .*ResNetModel.*"
                                       r"LlamaForCausalLM, .*Qwen2Model\.$"):
    huggingface.model_config(str(tmp_path / "neox"))
  transformers.GemmaForCausalLM(transformers.GemmaConfig(
      num_hidden_layers=1, hidden_size=16, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
      intermediate_size=32, vocab_size=50)).save_pretrained(str(tmp_path / "gemma"))
  with pytest.raises(ValueError, match=r"GemmaForCausalLM .*not supported \(it scales its embeddings"):
    huggingface.model_config(str(tmp_path / "gemma"))


def test_a_missing_or_truncated_weights_file_is_named(gpt2_dir, tmp_path):
  model_config = {**huggingface.model_config(gpt2_dir), "num_outputs": 500}
  shapes = jax.eval_shape(lambda: nn.unbox(models.build(model_config).init(jax.random.key(0),
                                                                           jnp.zeros((1, 4), jnp.int32))))
  for name in ("config.json", "tokenizer.json"):
    os.link(os.path.join(gpt2_dir, name), tmp_path / name)
  with pytest.raises(FileNotFoundError, match=r"No model\.safetensors in .*config\.json, tokenizer\.json"):
    huggingface.load(str(tmp_path), model_config, shapes["params"])
  with open(os.path.join(gpt2_dir, "model.safetensors"), "rb") as f:
    (tmp_path / "model.safetensors").write_bytes(f.read()[:-1000])
  with pytest.raises(ValueError, match=r"Cannot read .*model\.safetensors .* damaged or incomplete"):
    huggingface.load(str(tmp_path), model_config, shapes["params"])


def test_a_shape_that_does_not_fit_names_the_parameter(gpt2_dir):
  model_config = {**huggingface.model_config(gpt2_dir), "num_outputs": 500, "max_len": 32}
  variables = models.build(model_config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match=r"params/pos_embed: checkpoint transformer\.wpe\.weight gives \(256, 64\), "
                                       r"this model has \(32, 64\)"):
    huggingface.load(gpt2_dir, model_config, nn.unbox(variables)["params"])


def readme_config(path, **overrides):
  """A config file from docs/fine-tuning.md's "Start from a pretrained model", cut down to seconds."""
  c = importlib.import_module(path.replace("/", ".")[:-3]).get_config()
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 4, 2, 4, 4
  c.optimizer.warmup_steps = 1
  c.data.eval_examples = 200  # a slice: these tests check loading and shapes, not accuracy
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c


@pytest.mark.needs("fine_foods")
@pytest.mark.parametrize("path,ckpt", [("configs/fine_foods/gpt2_classifier.py", "gpt2"),
                                       ("configs/fine_foods/bert_classifier.py", "bert")])
@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_the_readme_text_classifiers_fine_tune_a_checkpoint_read_with_its_tokenizer(path, ckpt, gpt2_dir, bert_dir,
                                                                                     data_dir, tmp_path):
  directory = gpt2_dir if ckpt == "gpt2" else bert_dir
  c = readme_config(path, **{"init.hf": directory, "data.data_dir": data_dir, "data.seq_len": 32,
                             "data.eval_batch_size": 200})
  final = train_and_evaluate(c, str(tmp_path))
  assert 0 <= final["accuracy"] <= 1
  run = runs.load(str(tmp_path))
  assert run.tokenizer.kind == "hf" and run.config.model.name == ("gpt" if ckpt == "gpt2" else "bert")
  assert run.params["head"]["kernel"].shape[-1] == 2
  _, start = ours(directory, np.zeros((1, 32), np.int32), reinit=("^head/",), pool=run.config.model.pool,
                  num_outputs=2)
  trained = np.asarray(run.params["embed"]["embedding"])
  assert trained.shape == start["params"]["embed"]["embedding"].shape
  assert 0 < np.abs(trained - start["params"]["embed"]["embedding"]).max() < 0.05  # fine-tuned, not replaced
  if ckpt == "bert":  # imported, fine-tuned, handed back: transformers computes the same class logits
    export.export_hf(str(tmp_path), str(tmp_path / "hf"))
    ids = run.tokenizer.encode(text()[:100])[None, :32]
    assert relative_error(run.model.apply({"params": run.params}, ids), hf_logits(str(tmp_path / "hf"), ids)) < 1e-4


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
@pytest.mark.needs("fine_foods")
def test_lora_on_a_gpt2_checkpoint_trains_factors_and_head_and_leaves_its_weights_bit_identical(gpt2_dir, data_dir,
                                                                                             tmp_path):
  c = readme_config("configs/fine_foods/gpt2_classifier.py", **{"init.hf": gpt2_dir, "data.data_dir": data_dir,
                                                                 "data.seq_len": 32, "data.eval_batch_size": 200})
  c.optimizer.update(learning_rate=1e-2, lora=dict(rank=4, alpha=8.0))
  train_and_evaluate(c, str(tmp_path))
  mngr = workdir_lib.checkpoints(str(tmp_path), 10)
  saved = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  trained = dict(zip(*paths.flatten(saved["params"])[:2]))  # as orbax wrote them: the factors apart
  _, start = ours(gpt2_dir, np.zeros((1, 32), np.int32), reinit=("^head/",), pool="last", num_outputs=2)
  names, pretrained, _ = paths.flatten(start["params"])
  for name, x in zip(names, pretrained):  # every Hugging Face tensor as it was loaded; only the new head moved
    assert np.array_equal(trained[name], x) != name.startswith("head/"), name
  factors = sorted(n for n in trained if n.endswith("/lora_b"))
  assert factors == [f"block{i}/{k}/lora_b" for i in (0, 1) for k in ("attn/out", "attn/qkv", "mlp_in", "mlp_out")]
  assert all(np.abs(trained[n]).max() > 0 for n in factors)  # started at zero, trained
  run = runs.load(str(tmp_path))  # read back: the factors are in the kernels
  kernel = "block0/attn/qkv/kernel"
  merged = trained[kernel] + 8.0 / 4 * trained[kernel.replace("kernel", "lora_a")] @ trained[
      kernel.replace("kernel", "lora_b")]
  np.testing.assert_allclose(run.params["block0"]["attn"]["qkv"]["kernel"], merged, atol=1e-6, rtol=0)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
@pytest.mark.needs("fashion_mnist")
def test_the_readme_vit_fine_tunes_on_fashion_mnist_at_another_image_size(data_dir, tmp_path):
  directory = tiny_vit(tmp_path / "vit")
  c = readme_config("configs/fashion_mnist/vit_pretrained.py", **{
      "init.hf": directory, "data.data_dir": data_dir, "model.image_size": 16, "data.batch_size": 16,
      "data.eval_batch_size": 1000, "optimizer.freeze": ("^patch_embed/",)})
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert 0 <= final["accuracy"] <= 1
  run = runs.load(str(tmp_path / "run"))
  assert run.params["pos_embed"].shape == (1 + 4, 64) and run.params["head"]["kernel"].shape == (64, 10)
  _, start = ours(directory, images(channels=1, size=16), reinit=("^head/",), num_outputs=10, image_size=16)
  np.testing.assert_array_equal(run.params["patch_embed"]["kernel"], start["params"]["patch_embed"]["kernel"])
  assert np.abs(run.params["pos_embed"] - start["params"]["pos_embed"]).max() > 0  # trained


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_the_readme_resnet_fine_tunes_on_an_image_folder(data_dir, tmp_path):
  directory = tiny_resnet(tmp_path / "resnet")
  write_digit_folder(str(tmp_path / "imgs"), size=32)
  c = readme_config("configs/image_folder/resnet50_pretrained.py", **{
      "init.hf": directory, "data.data_dir": data_dir, "data.folder": str(tmp_path / "imgs"),
      "data.image_size": 32, "data.eval_split": "val", "data.batch_size": 16})
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert 0 <= final["accuracy"] <= 1
  run = runs.load(str(tmp_path / "run"))
  assert run.params["head"]["kernel"].shape == (64, 2)  # the 1000-class head was replaced


def hf_logits(directory, ids):
  ref = transformers.AutoModelForMaskedLM if "ForMaskedLM" in json.load(open(f"{directory}/config.json"))[
      "architectures"][0] else transformers.AutoModelForCausalLM
  if "Sequence" in json.load(open(f"{directory}/config.json"))["architectures"][0]:
    ref = transformers.AutoModelForSequenceClassification
  with torch.no_grad():
    return ref.from_pretrained(directory).eval()(torch.tensor(ids, dtype=torch.long)).logits.numpy()


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_a_fine_tuned_gpt2_exports_back_to_transformers_and_generates_from_the_cli(gpt2_dir, data_dir, tmp_path):
  c = readme_config("configs/shakespeare/gpt2_finetune.py", **{
      "init.hf": gpt2_dir, "data.data_dir": data_dir, "data.seq_len": 32, "data.eval_batch_size": 8})
  train_and_evaluate(c, str(tmp_path / "run"))
  proc = run_cli("bigmodel.generate", f"--workdir={tmp_path / 'run'}", "--prompt=ROMEO:", "--max_new_tokens=5",
                 "--greedy")
  assert proc.stdout.startswith("ROMEO:")
  run_cli("bigmodel.export", f"--workdir={tmp_path / 'run'}", f"--out={tmp_path / 'hf'}", "--format=hf")
  assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))("ROMEO:")["input_ids"] == \
      tokenizers.load(gpt2_dir).encode("ROMEO:").tolist()
  run = runs.load(str(tmp_path / "run"))
  ids = run.tokenizer.encode(text()[:200])[None, :32]
  assert relative_error(run.model.apply({"params": run.params}, ids), hf_logits(str(tmp_path / "hf"), ids)) < 1e-4
  # The served export reads text with the checkpoint's tokenizer too, and continues it as generate does.
  export.export(str(tmp_path / "run"), str(tmp_path / "served"), platforms=("cpu",))
  served = artifact.load(str(tmp_path / "served"), batch_sizes=(1,))
  prompt = served.encode("ROMEO:")
  assert served.tokenizer.kind == "hf" and prompt.tolist() == run.tokenizer.encode("ROMEO:").tolist()
  expected = generate.generate(run.model, run.params, prompt[None], 8, temperature=0.0)[0]
  assert served.generate([prompt.tolist()], 8, temperature=0.0)[0] == expected.tolist()


@pytest.mark.parametrize("kind", ["gpt", "bert_mlm", pytest.param("bert_classifier",
                                                                 marks=pytest.mark.needs("fine_foods"))])
@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_models_trained_from_scratch_export_to_transformers_with_the_same_logits(kind, data_dir, tmp_path):
  c = readme_config("configs/shakespeare/gpt_char.py", **{"data.data_dir": data_dir, "data.seq_len": 16,
                                                           "data.batch_size": 8, "data.eval_batch_size": 8})
  bert = dict(name="bert", num_layers=2, num_heads=2, dim=32, mlp_dim=64, max_len=16, dropout=0.0)
  if kind == "bert_mlm":
    c.model, c.data.mlm_mask_rate = bert, 0.15
  elif kind == "bert_classifier":
    c.model, c.loss = dict(bert, pool="cls"), "softmax_xent"
    c.data.update(name="fine_foods", tokenizer="byte", eval_split="test", eval_batch_size=200)
  train_and_evaluate(c, str(tmp_path / "run"))
  export.export_hf(str(tmp_path / "run"), str(tmp_path / "hf"))  # what --format=hf runs (its CLI: above)
  run = runs.load(str(tmp_path / "run"))
  ids = np.random.RandomState(0).randint(0, 60, (2, 16)).astype(np.int32)
  assert relative_error(run.model.apply({"params": run.params}, ids), hf_logits(str(tmp_path / "hf"), ids)) < 1e-4


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_a_model_with_no_hugging_face_equivalent_is_refused_with_the_reason(data_dir, tmp_path):
  c = readme_config("configs/shakespeare/gpt_char.py", **{"data.data_dir": data_dir, "data.seq_len": 16,
                                                           "data.batch_size": 8, "data.eval_batch_size": 8})
  c.model.update(positions="rope", num_layers=1, dim=32, num_heads=2)
  train_and_evaluate(c, str(tmp_path / "run"))
  proc = run_cli("bigmodel.export", f"--workdir={tmp_path / 'run'}", f"--out={tmp_path / 'hf'}", "--format=hf",
                 check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "no Hugging Face GPT-2 equivalent: it uses rotary positions" in proc.stderr
  assert not os.path.exists(tmp_path / "hf")


def test_the_fine_tuning_doc_names_the_commands_these_tests_run():
  readme = open(os.path.join(ROOT, "docs", "fine-tuning.md")).read()
  for path in ("configs/fine_foods/gpt2_classifier.py", "configs/fine_foods/bert_classifier.py",
               "configs/fashion_mnist/vit_pretrained.py", "configs/image_folder/resnet50_pretrained.py",
               "configs/shakespeare/gpt2_finetune.py"):
    assert f"--config={path}" in readme, path
  assert "--format=hf" in readme
