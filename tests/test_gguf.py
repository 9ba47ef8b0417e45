"""GGUF files (llama.cpp's) in and out: a real published one, SmolLM2-135M-Instruct.Q4_1.gguf, computes and
tokenizes here as transformers computes and tokenizes it; tiny files of every tensor type load as transformers
dequantizes them; what we write, transformers reads back with our logits, tokenizer and chat template."""
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from bigmodel import chat, errors, generate, huggingface, models  # noqa: E402
from bigmodel.huggingface import gguf as gguf_lib  # noqa: E402
from hf_checkpoints import smollm2_gguf, text, tiny_llama  # noqa: E402
from test_huggingface import SAMPLES, relative_error  # noqa: E402
from test_tokenizers import UNICODE  # noqa: E402

PROMPTS = ["The capital of France is", "Once upon a time, in a land far away, there lived a",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", "2 + 2 = 4, and 3 + 3 ="]


def reference_model(path):
  return transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()


def reference_tokenizer(path):
  return transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def ours(path, x, **overrides):
  """(our model, its params) for GGUF file `path`, initialised for inputs like `x`."""
  import flax.linen as nn
  config = {**huggingface.model_config(path), **overrides}
  config.setdefault("num_outputs", config["vocab_size"])
  model = models.build(config)
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), x)))
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  params, _, _ = huggingface.load(path, config, fresh.pop("params"), fresh)
  return model, params, config


def padded(rows):
  """Right-padded ids: ours marks padding -1; transformers takes an attention mask."""
  mask = np.arange(max(map(len, rows)))[None] < np.array([len(r) for r in rows])[:, None]
  ids = np.zeros(mask.shape, np.int32)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
  return np.where(mask, ids, -1).astype(np.int32), torch.tensor(ids, dtype=torch.long), torch.tensor(
      mask.astype(np.int64)), mask


@pytest.fixture(scope="module")
def smol():
  """SmolLM2-135M-Instruct as we load it (once per module), its tokenizer ours and transformers'."""
  path = smollm2_gguf()
  tok = gguf_lib.tokenizer(path)
  model, params, config = ours(path, np.zeros((1, 8), np.int32), max_len=256)
  return dict(path=path, tok=tok, model=model, params=params, config=config)


@pytest.fixture(scope="module")
def smol_reference(smol):
  return reference_model(smol["path"])


@pytest.mark.slow  # the real 98 MB SmolLM2 file (its GGUF reader alone takes ~10 s): the full suite runs it
def test_smollm2s_metadata_gives_its_published_sizes_and_special_tokens(smol):
  c = smol["config"]
  assert (c["num_layers"], c["dim"], c["num_heads"], c["num_kv_heads"], c["mlp_dim"], c["vocab_size"]) == \
      (30, 576, 9, 3, 1536, 49152)
  assert c["tie_embeddings"] and c["rope_theta"] == 100_000.0 and c["head_dim"] == 64
  tok = smol["tok"]
  assert (tok.bos_id, tok.eos_id) == (1, 2)  # <|im_start|> and <|im_end|>, as the file names them
  assert chat.template(tok).end_of_turn_id == 2


@pytest.mark.slow  # the real 98 MB SmolLM2 file (its GGUF reader alone takes ~10 s): the full suite runs it
def test_smollm2s_token_ids_equal_transformers_on_real_text_a_long_document_and_odd_unicode(smol):
  reference = reference_tokenizer(smol["path"])
  long_document = text()[:50_000]  # Shakespeare: names, verse, punctuation, line breaks
  samples = [long_document, "The capital of France is", UNICODE, *SAMPLES, "In 2024, 12,345 people paid $3.50.",
             "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "  leading spaces\r\n\ttab"]
  for sample in samples:
    ids = smol["tok"].encode(sample)
    assert ids.tolist() == reference(sample)["input_ids"], sample[:40]
    assert smol["tok"].decode(ids) == reference.decode(ids.tolist()), sample[:40]
  assert len(smol["tok"].encode(long_document)) > 10_000


@pytest.mark.slow  # the real 98 MB SmolLM2 file (its GGUF reader alone takes ~10 s): the full suite runs it
def test_smollm2_continues_the_capital_of_france_with_paris(smol):
  prompt = smol["tok"].encode("The capital of France is")[None]
  logits = smol["model"].apply({"params": smol["params"]}, prompt)  # one forward pass: the cache is tested below
  assert smol["tok"].decode(np.asarray(logits[0, -1]).argmax()[None]) == " Paris"


@pytest.mark.slow  # transformers loads the file in ~40 s on 2 busy cores
def test_smollm2s_logits_equal_transformers_on_a_padded_batch_of_real_prompts(smol, smol_reference):
  ours_ids, ids, attention, mask = padded([smol["tok"].encode(p) for p in PROMPTS])
  assert len(set(mask.sum(1))) == len(PROMPTS)  # every row a different length
  logits = np.asarray(smol["model"].apply({"params": smol["params"]}, ours_ids))
  with torch.no_grad():
    expected = smol_reference(ids, attention_mask=attention).logits.numpy()
  assert relative_error(logits[mask], expected[mask]) < 1e-4


@pytest.mark.slow  # transformers loads the file in ~40 s on 2 busy cores
def test_32_greedy_tokens_with_our_kv_cache_equal_transformers_generate(smol, smol_reference):
  template = chat.template(smol["tok"])
  for question, new in (("Write a short story about a dragon who learns to read.", 32),
                        ("What is the capital of France?", 16)):
    prompt = template.encode([{"role": "user", "content": question}])[None]
    out = generate.generate(smol["model"], smol["params"], prompt, new, temperature=0.0,
                            eos_id=template.end_of_turn_id)  # SmolLM2's end of text is its end of turn
    with torch.no_grad():  # it stops at <|im_end|> (its generation config's EOS), as ours does with eos_id
      ids = torch.tensor(prompt, dtype=torch.long)
      expected = smol_reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                         do_sample=False, pad_token_id=-1).numpy()
    kept = generate.text_ids(out[0], prompt.shape[1], template.end_of_turn_id)
    np.testing.assert_array_equal(out[0, :expected.shape[1]], expected[0])
    answer = smol["tok"].decode(kept[prompt.shape[1]:])
    if new == 32:
      assert len(kept) == prompt.shape[1] + 32, answer  # 32 tokens compared, no end of turn among them
    else:
      assert answer == "The capital of France is Paris."


# ---- Tiny files of every tensor type ----

def llama_cpp_rope_factors(config):
  """What llama.cpp's convert_hf_to_gguf.py writes as rope_freqs.weight for a Llama 3 rope_parameters: per
  frequency, 1 (high), factor (low) or the blend between (written again here from its loop)."""
  import math
  rope, dim = config["rope_parameters"], config["head_dim"]
  freqs = 1.0 / (rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
  old, low, high = rope["original_max_position_embeddings"], rope["low_freq_factor"], rope["high_freq_factor"]
  out = []
  for freq in freqs:
    wavelen = 2 * math.pi / freq
    if wavelen < old / high:
      out.append(1)
    elif wavelen > old / low:
      out.append(rope["factor"])
    else:
      smooth = (old / wavelen - low) / (high - low)
      out.append(1 / ((1 - smooth) / rope["factor"] + smooth))
  return np.asarray(out, np.float32)


def tiny_gguf(path, directory, qtype, tied=False):
  """The tiny Llama in `directory` (transformers') written as llama.cpp's converter writes one, its 2-D weights
  of type `qtype`: random blocks for the types the gguf package cannot quantize (K-quants), each byte below
  0x30 so that every float16 scale in them is finite and small."""
  from safetensors.numpy import load_file
  config = json.load(open(os.path.join(directory, "config.json")))
  tensors = load_file(os.path.join(directory, "model.safetensors"))
  if tied:
    tensors.pop("lm_head.weight", None)
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(config["num_hidden_layers"])
  w.add_context_length(config["max_position_embeddings"])
  w.add_embedding_length(config["hidden_size"])
  w.add_feed_forward_length(config["intermediate_size"])
  w.add_head_count(config["num_attention_heads"])
  w.add_head_count_kv(config["num_key_value_heads"])
  w.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
  w.add_layer_norm_rms_eps(config["rms_norm_eps"])
  w.add_vocab_size(config["vocab_size"])
  if config["rope_parameters"].get("rope_type") == "llama3":
    w.add_tensor("rope_freqs.weight", llama_cpp_rope_factors(config))
  t = gguf.GGMLQuantizationType[qtype]
  rng = np.random.RandomState(0)
  names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
  for name, x in tensors.items():
    x = np.asarray(x, np.float32)
    if name.endswith(("q_proj.weight", "k_proj.weight")):  # llama.cpp's rows: (i, i + K/2) -> (2i, 2i + 1)
      heads = config["num_attention_heads" if "q_proj" in name else "num_key_value_heads"]
      x = x.reshape(heads, 2, x.shape[0] // heads // 2, x.shape[1]).swapaxes(1, 2).reshape(x.shape)
    theirs = names.get_name(name, try_suffixes=(".weight",))
    theirs = theirs if theirs.endswith(".weight") else theirs + ".weight"
    if x.ndim == 1 or qtype in ("F32", "F16", "BF16") or qtype in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
      kind = t if x.ndim == 2 else gguf.GGMLQuantizationType.F32
      w.add_tensor(theirs, gguf.quants.quantize(x, kind), raw_dtype=kind)
    else:  # K-quants: random blocks
      block, size = gguf.GGML_QUANT_SIZES[t]
      raw = rng.randint(0, 0x30, (x.shape[0], x.shape[1] // block * size)).astype(np.uint8)
      w.add_tensor(theirs, raw, raw_dtype=t)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  """A 2-layer Llama with rows of 256 (K-quants' blocks), 4 query heads over 2 key/value heads."""
  return tiny_llama("llama", tmp_path_factory.mktemp("tiny"), hidden_size=256, intermediate_size=256,
                    attention_bias=False, rope_parameters=dict(rope_type="default", rope_theta=10_000.0))


@pytest.mark.parametrize("qtype, tied", [(t, t == "Q4_1") for t in gguf_lib.LOADS])
def test_each_tensor_type_loads_as_transformers_dequantizes_it_with_llama_cpps_rows_put_back(
    tiny_dir, tmp_path, qtype, tied):
  path = tiny_gguf(tmp_path / f"tiny-{qtype}.gguf", tiny_dir, qtype, tied)
  model, params, config = ours(path, np.zeros((1, 8), np.int32))
  assert config["tie_embeddings"] == tied
  reference = reference_model(path)
  expected = {n: p.detach().numpy() for n, p in reference.state_dict().items()}
  theirs = huggingface.tensors_of({**models.defaults("llama"), **config}, params)
  assert set(theirs) == set(expected) - ({"lm_head.weight"} if tied else set())
  for name, x in theirs.items():
    np.testing.assert_allclose(x, expected[name], rtol=0, atol=1e-6 * np.abs(expected[name]).max(), err_msg=name)
  ids = np.random.RandomState(0).randint(0, config["vocab_size"], (2, 10)).astype(np.int32)
  with torch.no_grad():
    logits = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  assert relative_error(model.apply({"params": params}, ids), logits) < 1e-4


def test_llama_3s_rescaled_rotary_frequencies_load_from_rope_freqs_as_transformers_computes_them(tmp_path):
  """Llama 3.1/3.2 GGUF files hold rope_freqs.weight instead of rope_parameters: the settings found from it
  give transformers' logits on the Hugging Face checkpoint it was converted from."""
  directory = tiny_llama("llama", tmp_path / "llama3", hidden_size=256, intermediate_size=256, attention_bias=False,
                         head_dim=64)  # rope_type llama3, factor 8, original 16: three frequencies in the blend
  config = json.load(open(os.path.join(directory, "config.json")))
  path = tiny_gguf(tmp_path / "llama3.gguf", directory, "F32")
  rope = huggingface.model_config(path)
  assert (rope["rope_scaling"], rope["rope_factor"], rope["rope_original_max_len"]) == ("llama3", 8.0, 16)
  assert rope["rope_high_freq_factor"] == pytest.approx(4.0)
  ids = np.random.RandomState(0).randint(0, config["vocab_size"], (2, 40)).astype(np.int32)
  model, params, _ = ours(path, ids)
  with torch.no_grad():
    expected = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()(
        torch.tensor(ids, dtype=torch.long)).logits.numpy()
  assert relative_error(model.apply({"params": params}, ids), expected) < 1e-4
  unscaled = models.build({**huggingface.model_config(path), "rope_scaling": "none", "num_outputs": 299})
  assert relative_error(unscaled.apply({"params": params}, ids), expected) > 1e-3  # the scaling shows
  # and our export writes them back as llama.cpp does
  from bigmodel import tokenizers
  written = {**models.defaults("llama"), **rope, "num_outputs": 299}
  gguf_lib.write(str(tmp_path / "out.gguf"), written, huggingface.tensors_of(written, params),
                 tokenizers.load(directory))
  tensors = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "out.gguf")).tensors}
  factors = tensors["rope_freqs.weight"]
  np.testing.assert_allclose(factors, llama_cpp_rope_factors(config), rtol=1e-5)


def test_a_file_of_another_architecture_or_tensor_type_is_refused_naming_it(tiny_dir, tmp_path):
  path = tiny_gguf(tmp_path / "tiny.gguf", tiny_dir, "F32")
  other = tmp_path / "falcon.gguf"
  w = gguf.GGUFWriter(str(other), "falcon")
  w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
  with pytest.raises(errors.UserError, match="architecture 'falcon'; bigmodel loads llama GGUF files only"):
    huggingface.model_config(str(other))
  reader = gguf.GGUFReader(path)  # the same file, one tensor re-typed TQ1_0 (ternary; no Llama ships it)
  odd = tmp_path / "odd.gguf"
  w = gguf.GGUFWriter(str(odd), "llama")
  for name, field in reader.fields.items():
    if name.startswith("llama."):
      w.add_key_value(name, field.contents(), field.types[0])
  for t in reader.tensors:
    if t.name == "blk.1.ffn_up.weight":
      block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.TQ1_0]
      w.add_tensor(t.name, np.zeros((t.shape[1], t.shape[0] // block * size), np.uint8),
                   raw_dtype=gguf.GGMLQuantizationType.TQ1_0)
    else:
      w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
  w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
  model = {**models.defaults("llama"), **huggingface.model_config(str(odd)), "num_outputs": 299}
  with pytest.raises(errors.UserError, match=r"blk\.1\.ffn_up\.weight \(TQ1_0\)"):
    huggingface.load(str(odd), model, {}, {})
  from conftest import run_cli  # what a person sees: one error line, exit 2
  proc = run_cli("bigmodel.train", "--config=configs/shakespeare/llama_lora.py", f"--config.init.hf={other}",
                 "--print_config", check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "'falcon'" in proc.stderr


# ---- Out ----

# The logits' largest error relative to their scale, transformers on the file against ours on the model written
# (f32: the two libraries' float32 arithmetic only; its tensors are compared exactly). Q8_0 rounds each weight
# to 1/254 of its block's largest (0.4 %, measured on every tensor here); through this random tiny Llama that
# moves the logits by 4.4 % of their scale (measured), f16 by 0.02 %.
QUANTISATION_ERROR = {"f32": 1e-5, "f16": 2e-3, "q8_0": 8e-2}


def with_template(directory, out):
  """The tiny checkpoint's tokenizer with SmolLM2's ChatML template in its tokenizer_config.json."""
  import shutil
  from bigmodel import tokenizers
  shutil.copytree(directory, out)
  config = json.load(open(os.path.join(out, "tokenizer_config.json")))
  config["chat_template"] = chat.template(gguf_lib.tokenizer(smollm2_gguf())).source
  json.dump(config, open(os.path.join(out, "tokenizer_config.json"), "w"))
  return tokenizers.load(str(out))


@pytest.mark.slow  # three exports read back by transformers (~30 s of the fast tier)
@pytest.mark.parametrize("dtype", sorted(QUANTISATION_ERROR))
def test_the_export_reads_back_into_transformers_with_our_logits_tokenizer_and_chat_template(tiny_dir, tmp_path,
                                                                                             dtype):
  from test_huggingface import ours as ours_hf
  tok = with_template(tiny_dir, tmp_path / "source")
  ids = np.random.RandomState(0).randint(0, 299, (2, 12)).astype(np.int32)
  model, variables = ours_hf(tiny_dir, ids, num_outputs=299)
  config = {**models.defaults("llama"), **huggingface.model_config(tiny_dir), "num_outputs": 299}
  path = str(tmp_path / f"tiny-{dtype}.gguf")
  gguf_lib.write(path, config, huggingface.tensors_of(config, variables["params"]), tok, dtype)
  logits = np.asarray(model.apply(variables, ids))
  reference = reference_model(path)
  if dtype == "f32":
    written = huggingface.tensors_of(config, variables["params"])
    for name, x in reference.state_dict().items():
      np.testing.assert_array_equal(x.numpy(), written[name], err_msg=name)
  with torch.no_grad():
    theirs = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  error = relative_error(theirs, logits)
  assert error < QUANTISATION_ERROR[dtype], error
  if dtype != "f32":
    assert error > 1e-7  # the weights were rounded: this is the file's, not a copy of ours
  back, params, _ = ours(path, ids)  # and we read back what transformers reads
  assert relative_error(back.apply({"params": params}, ids), theirs) < 1e-5
  reference = reference_tokenizer(path)
  for sample in [text()[:2000], UNICODE, *SAMPLES]:
    assert reference(sample)["input_ids"] == tok.encode(sample).tolist() == \
        gguf_lib.tokenizer(path).encode(sample).tolist(), sample[:40]
  messages = [{"role": "user", "content": "ROMEO: What light?"}]
  assert reference.chat_template == chat.template(tok).source
  read_back = chat.template(gguf_lib.tokenizer(path))
  assert read_back.encode(messages).tolist() == chat.template(tok).encode(messages).tolist()


def test_a_model_gguf_cannot_hold_is_refused_before_writing(tiny_dir, tmp_path):
  from bigmodel import tokenizers
  config = {**models.defaults("llama"), **huggingface.model_config(tiny_dir), "num_outputs": 299, "qkv_bias": True}
  with pytest.raises(errors.UserError, match="biases"):
    gguf_lib.write(str(tmp_path / "x.gguf"), config, {}, tokenizers.load(tiny_dir))
  config["qkv_bias"] = False
  with pytest.raises(errors.UserError, match="bigmodel's 'byte'"):
    gguf_lib.write(str(tmp_path / "x.gguf"), config, {}, tokenizers.build("byte"))
  assert not os.path.exists(tmp_path / "x.gguf")


@pytest.mark.slow  # transformers reads the 540 MB float32 file in ~1 min on 2 busy cores
def test_smollm2_goes_out_as_f32_gguf_and_transformers_reads_our_logits_tokenizer_and_template(smol, tmp_path):
  path = str(tmp_path / "smollm2-f32.gguf")
  config = {**models.defaults("llama"), **smol["config"]}
  gguf_lib.write(path, config, huggingface.tensors_of(config, smol["params"]), smol["tok"], "f32")
  ours_ids, ids, attention, mask = padded([smol["tok"].encode(p) for p in PROMPTS])
  logits = np.asarray(smol["model"].apply({"params": smol["params"]}, ours_ids))
  with torch.no_grad():
    theirs = reference_model(path)(ids, attention_mask=attention).logits.numpy()
  assert relative_error(logits[mask], theirs[mask]) < 1e-4
  reference = reference_tokenizer(path)
  for sample in [text()[:5000], UNICODE, "<|im_start|>user\nHi<|im_end|>\n"]:
    assert reference(sample)["input_ids"] == smol["tok"].encode(sample).tolist()
  assert reference.chat_template == chat.template(smol["tok"]).source
  assert chat.template(gguf_lib.tokenizer(path)).end_of_turn_id == 2


@pytest.mark.slow  # a LoRA training (compiles) and an export through the CLI
def test_a_lora_run_started_from_a_gguf_file_exports_a_gguf_that_transformers_reads_with_the_runs_logits(
    tiny_dir, data_dir, tmp_path):
  from conftest import run_cli
  from test_huggingface import ours as ours_hf, readme_config
  from bigmodel import runs
  from bigmodel.train import train_and_evaluate
  tok = with_template(tiny_dir, tmp_path / "source")
  ids = np.zeros((1, 8), np.int32)
  _, variables = ours_hf(tiny_dir, ids, num_outputs=299)
  config = {**models.defaults("llama"), **huggingface.model_config(tiny_dir), "num_outputs": 299}
  source = str(tmp_path / "source.gguf")
  gguf_lib.write(source, config, huggingface.tensors_of(config, variables["params"]), tok, "f32")
  c = readme_config("configs/shakespeare/llama_lora.py", **{
      "init.hf": source, "data.data_dir": data_dir, "data.seq_len": 32, "data.eval_batch_size": 8, "model.max_len": 64})
  c.optimizer.learning_rate = 1e-2
  train_and_evaluate(c, str(tmp_path / "run"))
  run = runs.load(str(tmp_path / "run"))
  q = lambda params: np.asarray(params["block0"]["attn"]["q"]["kernel"])
  assert np.abs(q(run.params) - q(variables["params"])).max() > 0  # LoRA's factors, merged in
  assert chat.template(run.tokenizer).source == chat.template(tok).source  # the file's template came into the run
  out = tmp_path / "tuned.gguf"
  run_cli("bigmodel.export", f"--workdir={tmp_path / 'run'}", f"--out={out}", "--format=gguf", "--dtype=f32")
  ids = run.tokenizer.encode(text()[:300])[None, :32]
  with torch.no_grad():
    theirs = reference_model(str(out))(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  assert relative_error(run.model.apply({"params": run.params}, ids), theirs) < 1e-5
  assert reference_tokenizer(str(out)).chat_template == chat.template(tok).source
  from bigmodel import export, tokenizers  # the server's export carries the template and its end of turn
  spec = export.export(str(tmp_path / "run"), str(tmp_path / "served"), platforms=("cpu",))
  served = chat.template(tokenizers.load(str(tmp_path / "served")))
  assert served.source == chat.template(tok).source
  # This tokenizer has no <|im_end|> token: the template's end of turn is its end of text, </s>.
  assert spec["input"]["end_of_turn_id"] == served.end_of_turn_id == tok.eos_id == 1


def test_a_sentencepiece_vocabulary_in_gguf_tokenizes_as_transformers_and_sentencepiece_do(tmp_path):
  """tokenizer.ggml.model=llama (Llama 2's, TinyLlama's, Mistral's): pieces, scores and types as llama.cpp's
  converter writes them from a SentencePiece BPE model (trained here with Llama's settings), no merges."""
  import io
  import sentencepiece as spm
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(text()[:200_000].splitlines()), model_writer=model, model_type="bpe", vocab_size=600,
      byte_fallback=True, split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, minloglevel=2)
  sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
  n = sp.get_piece_size()
  types = [gguf.TokenType.UNKNOWN if sp.is_unknown(i) else gguf.TokenType.CONTROL if sp.is_control(i) else
           gguf.TokenType.BYTE if sp.is_byte(i) else gguf.TokenType.NORMAL for i in range(n)]
  path = str(tmp_path / "spm.gguf")
  w = gguf.GGUFWriter(path, "llama")
  w.add_tokenizer_model("llama")
  w.add_token_list([sp.id_to_piece(i) for i in range(n)])
  w.add_token_scores([sp.get_score(i) for i in range(n)])
  w.add_token_types([int(t) for t in types])
  w.add_bos_token_id(1), w.add_eos_token_id(2), w.add_unk_token_id(0)
  w.add_tensor("token_embd.weight", np.zeros((n, 8), np.float32))
  w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
  ours_ = gguf_lib.tokenizer(path)
  reference = reference_tokenizer(path)
  assert (ours_.bos_id, ours_.eos_id) == (1, 2)
  for sample in [text()[200_000:203_000], "ROMEO: What light", "In 2024, 12 ships", UNICODE, *SAMPLES]:
    ids = ours_.encode(sample).tolist()
    assert ids == reference(sample)["input_ids"], sample[:40]
    assert ids == [1, *sp.encode(sample)], sample[:40]  # llama.cpp adds BOS to a SentencePiece vocabulary
    assert ours_.decode(ids[1:]) == reference.decode(ids[1:]), sample[:40]
