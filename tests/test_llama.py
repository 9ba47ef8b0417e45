"""Llama-shaped checkpoints (Llama, Mistral, Qwen2): our model computes what transformers computes, on a
padded batch and token by token with its KV cache, its exports load back into transformers, and what it
does not compute is refused. Every checkpoint is tiny, random and made by transformers here."""
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bigmodel import errors, generate, huggingface, tokenizers  # noqa: E402
from bigmodel.models import llama  # noqa: E402
from hf_checkpoints import LLAMA_CLASSES, llama_dir, tiny_llama  # noqa: E402,F401 (a fixture)
from test_huggingface import ours, padded_batch, relative_error  # noqa: E402


def reference(directory):
  return transformers.AutoModelForCausalLM.from_pretrained(directory).eval()


def expected_logits(directory, ids, attention):
  with torch.no_grad():
    return reference(directory)(ids, attention_mask=attention).logits.numpy()


@pytest.mark.parametrize("scan_layers", [False, True])
def test_logits_equal_transformers_on_a_padded_batch(llama_dir, scan_layers):
  vocab = json.load(open(os.path.join(llama_dir, "config.json")))["vocab_size"]
  ours_ids, ids, attention, mask = padded_batch(vocab)
  model, variables = ours(llama_dir, ours_ids, num_outputs=vocab, scan_layers=scan_layers)
  expected = expected_logits(llama_dir, ids, attention)
  assert relative_error(model.apply(variables, ours_ids)[mask], expected[mask]) < 1e-4


def test_a_swapped_rotary_half_or_a_wrong_key_value_grouping_fails_the_parity_check(llama_dir):
  """The mistakes a Llama port makes: the rotary halves swapped (channel i turned with i + K/2 the other
  way round), and query head n reading key/value head n % G instead of n // G (tiled, not repeated)."""
  config = json.load(open(os.path.join(llama_dir, "config.json")))
  vocab, H, G = (config[k] for k in ("vocab_size", "num_attention_heads", "num_key_value_heads"))
  K = config.get("head_dim") or config["hidden_size"] // H
  ours_ids, ids, attention, mask = padded_batch(vocab)
  model, variables = ours(llama_dir, ours_ids, num_outputs=vocab)
  expected = expected_logits(llama_dir, ids, attention)[mask]
  assert relative_error(model.apply(variables, ours_ids)[mask], expected) < 1e-4

  def halves_swapped(kernel):  # (in, H x K): within each head, the second half first
    x = kernel.reshape(kernel.shape[0], H, 2, K // 2)
    return x[:, :, ::-1].reshape(kernel.shape)

  def grouped_as_tiles(kernel):  # where head n's query reads group n // (H / G), put the one that reads n % G
    x = kernel.reshape(kernel.shape[0], H // G, G, K)
    return np.swapaxes(x, 1, 2).reshape(kernel.shape)

  wrongs = [("block0/attn/q/kernel", halves_swapped)]
  if G > 1:  # with one key/value head every query head reads it: no grouping to get wrong
    wrongs.append(("block1/attn/q/kernel", grouped_as_tiles))
  for path, wrong in wrongs:
    broken = jax.tree_util.tree_map_with_path(
        lambda p, x: wrong(np.asarray(x)) if jax.tree_util.keystr(p, simple=True, separator="/") == f"params/{path}"
        else x, variables)
    assert relative_error(model.apply(broken, ours_ids)[mask], expected) > 1e-2, path


def test_greedy_generation_with_our_kv_cache_equals_transformers_generate(llama_dir):
  prompt = tokenizers.load(llama_dir).encode("ROMEO:\nWhat light")[None]
  vocab = json.load(open(os.path.join(llama_dir, "config.json")))["vocab_size"]
  model, variables = ours(llama_dir, prompt, num_outputs=vocab)
  out = generate.generate(model, variables["params"], prompt, 20, temperature=0.0)
  with torch.no_grad():
    # The prompt starts with BOS, whose id may be the pad id: the mask says every token is real.
    ids = torch.tensor(prompt, dtype=torch.long)
    expected = reference(llama_dir).generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20,
                                             min_new_tokens=20, do_sample=False, pad_token_id=0).numpy()
  np.testing.assert_array_equal(out, expected)


def test_the_export_loads_back_into_transformers_with_the_same_tensors_and_logits(llama_dir, tmp_path):
  from safetensors.numpy import load_file
  config = {**huggingface.model_config(llama_dir), "num_outputs": json.load(open(
      os.path.join(llama_dir, "config.json")))["vocab_size"]}
  ours_ids, ids, attention, mask = padded_batch(config["num_outputs"])
  model, variables = ours(llama_dir, ours_ids, num_outputs=config["num_outputs"], scan_layers=True)
  config = {**llama.Llama(1).__dict__, **config, "scan_layers": True}  # every key, as a resolved config has
  exported = huggingface.save(str(tmp_path), config, variables["params"], tokenizers.load(llama_dir))
  original = json.load(open(os.path.join(llama_dir, "config.json")))
  assert exported["architectures"][0] in (original["architectures"][0], LLAMA_CLASSES["llama"])  # Mistral's is a Llama
  saved, tensors = load_file(str(tmp_path / "model.safetensors")), load_file(os.path.join(llama_dir,
                                                                                        "model.safetensors"))
  assert set(saved) == set(tensors)
  for name, x in saved.items():
    np.testing.assert_array_equal(x, tensors[name], err_msg=name)
  assert relative_error(expected_logits(str(tmp_path), ids, attention)[mask],
                        expected_logits(llama_dir, ids, attention)[mask]) < 1e-6
  assert transformers.AutoTokenizer.from_pretrained(str(tmp_path))("ROMEO:")["input_ids"] == \
      transformers.AutoTokenizer.from_pretrained(llama_dir)("ROMEO:")["input_ids"]


def test_rope_frequencies_equal_transformers_for_each_scaling():
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  for kind, extra in (("linear", dict(factor=4.0)), ("llama3", dict(factor=32.0, low_freq_factor=1.0,
                                                                    high_freq_factor=4.0,
                                                                    original_max_position_embeddings=8192))):
    hf = transformers.LlamaConfig(hidden_size=2048, num_attention_heads=32, head_dim=64, rope_parameters=dict(
        rope_type=kind, rope_theta=500_000.0, **extra), max_position_embeddings=131_072)
    expected, _ = ROPE_INIT_FUNCTIONS[kind](hf, "cpu")
    ours_ = llama.frequencies(64, 500_000.0, kind, extra["factor"], extra.get("low_freq_factor", 1.0),
                              extra.get("high_freq_factor", 4.0), extra.get("original_max_position_embeddings", 8192))
    np.testing.assert_allclose(ours_, expected.numpy(), rtol=1e-6, err_msg=kind)
    assert not np.allclose(ours_, llama.frequencies(64, 500_000.0)), kind  # the scaling changed something


@pytest.mark.parametrize("kind, overrides, message", [
    ("qwen2", dict(use_sliding_window=True, sliding_window=16, max_window_layers=1),
     "attend within a sliding window only"),
    ("llama", dict(rope_parameters=dict(rope_type="yarn", rope_theta=10_000.0, factor=4.0)), "rope_type='yarn'"),
    ("llama", dict(hidden_act="gelu"), "hidden_act='gelu'"),
])
def test_what_our_llama_does_not_compute_is_refused_with_the_reason(kind, overrides, message, tmp_path):
  directory = tiny_llama(kind, tmp_path / kind, **overrides)
  with pytest.raises(errors.UserError, match=message.replace("(", r"\(")):
    huggingface.model_config(directory)


def test_a_mixture_of_experts_is_refused_by_name(tmp_path):
  os.makedirs(tmp_path / "mixtral")
  json.dump(dict(model_type="mixtral", architectures=["MixtralForCausalLM"], num_local_experts=8),
            open(tmp_path / "mixtral" / "config.json", "w"))
  with pytest.raises(errors.UserError, match="not supported \\(its MLP is a mixture of experts\\)"):
    huggingface.model_config(str(tmp_path / "mixtral"))


def test_mistrals_sliding_window_cuts_the_context_to_what_it_computes_exactly(tmp_path):
  directory = tiny_llama("mistral", tmp_path / "mistral", sliding_window=16)
  assert huggingface.model_config(directory)["max_len"] == 16
  vocab = json.load(open(os.path.join(directory, "config.json")))["vocab_size"]
  ours_ids, ids, attention, mask = padded_batch(vocab, lengths=(16, 9))
  model, variables = ours(directory, ours_ids, num_outputs=vocab)
  assert relative_error(model.apply(variables, ours_ids)[mask], expected_logits(directory, ids, attention)[mask]) < 1e-4


def ending_early(directory, prompt, step=2):
  """Rewrites the checkpoint in `directory` so that greedy decoding of `prompt` draws </s> where it drew its
  `step`-th new token, X, and wherever else X would have won with a positive logit: </s>'s lm_head row
  becomes three times X's."""
  from safetensors.torch import load_file, save_file
  path = os.path.join(directory, "model.safetensors")
  with torch.no_grad():
    ids = torch.tensor(prompt[None], dtype=torch.long)
    drawn = reference(directory).generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=step + 1,
                                          min_new_tokens=step + 1, do_sample=False, pad_token_id=0)[0, -1]
  tensors = load_file(path)
  eos = tokenizers.load(directory).eos_id
  tensors["lm_head.weight"][eos] = 3 * tensors["lm_head.weight"][int(drawn)]
  save_file(tensors, path, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def tuned(data_dir, tmp_path_factory):
  """configs/shakespeare/llama_lora.py on a tiny Llama whose greedy continuation of "ROMEO:" reaches </s>:
  LoRA on Shakespeare, a few steps. The tests below run the config's other commands on it."""
  from test_huggingface import readme_config
  from bigmodel import runs
  from bigmodel.train import train_and_evaluate
  root = tmp_path_factory.mktemp("tuned")
  directory = tiny_llama("llama", root / "llama")
  tok = tokenizers.load(directory)
  prompt = tok.encode("ROMEO:")
  ending_early(directory, prompt)
  c = readme_config("configs/shakespeare/llama_lora.py", **{
      "init.hf": directory, "data.data_dir": data_dir, "data.seq_len": 32, "data.eval_batch_size": 8,
      "model.max_len": 64})
  c.optimizer.learning_rate = 1e-3
  train_and_evaluate(c, str(root / "run"))
  run = runs.load(str(root / "run"))
  # Greedy with our KV cache, stopping at </s>: the text every command below must give.
  expected = generate.generate(run.model, run.params, prompt[None], 12, temperature=0.0, eos_id=tok.eos_id)[0]
  return dict(root=root, checkpoint=directory, run=run, prompt=prompt, eos_id=tok.eos_id,
              kept=generate.text_ids(expected, len(prompt), tok.eos_id), expected=expected)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_lora_fine_tuning_trains_only_the_factors_and_greedy_decoding_stops_at_end_of_text(tuned):
  run, prompt = tuned["run"], tuned["prompt"]
  tok = tokenizers.load(tuned["checkpoint"])
  assert (tok.bos_id, tok.eos_id) == (0, 1)  # <s> and </s>, from tokenizer_config.json
  vocab = run.params["embed"]["embedding"].shape[0]
  _, start = ours(tuned["checkpoint"], np.zeros((1, 8), np.int32), num_outputs=vocab)
  q = run.params["block0"]["attn"]["q"]["kernel"]
  assert 0 < np.abs(q - start["params"]["block0"]["attn"]["q"]["kernel"]).max()  # the factors merged in
  kept, expected = tuned["kept"], tuned["expected"]
  assert len(kept) < len(expected) and expected[len(kept)] == tuned["eos_id"], expected  # it stopped there


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_the_generate_cli_prints_the_text_up_to_end_of_text(tuned):
  from conftest import run_cli
  proc = run_cli("bigmodel.generate", f"--workdir={tuned['root'] / 'run'}", "--prompt=ROMEO:", "--max_new_tokens=12",
                 "--greedy")
  assert proc.stdout.startswith("ROMEO:")  # the <s> before the prompt is not printed
  assert proc.stdout.rstrip("\n") == tuned["run"].tokenizer.decode(tuned["kept"][1:])


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_the_tuned_model_goes_back_to_transformers_with_its_logits_tokenizer_and_end_of_text(tuned):
  from test_huggingface import hf_logits
  from conftest import run_cli
  run, out = tuned["run"], tuned["root"] / "hf"
  run_cli("bigmodel.export", f"--workdir={tuned['root'] / 'run'}", f"--out={out}", "--format=hf")
  exported = json.load(open(out / "config.json"))
  assert (exported["bos_token_id"], exported["eos_token_id"]) == (0, 1)
  ids = run.tokenizer.encode(huggingface_text())[None, :32]
  assert relative_error(run.model.apply({"params": run.params}, ids), hf_logits(str(out), ids)) < 1e-4
  assert transformers.AutoTokenizer.from_pretrained(str(out))("ROMEO:")["input_ids"] == tuned["prompt"].tolist()


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_the_served_export_answers_the_openai_client_and_stops_at_end_of_text(tuned):
  import openai
  from test_serve import Server
  from bigmodel import export
  root, run = tuned["root"], tuned["run"]
  export.export(str(root / "run"), str(root / "served"), platforms=("cpu",))
  server = Server(root / "served", root / "serve.log", "--slots=2", "--lengths=16", "--max_new_tokens=16")
  try:
    server.wait()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=60)
    reply = client.completions.create(model="served", prompt="ROMEO:", max_tokens=12, temperature=0)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].text == run.tokenizer.decode(tuned["kept"][len(tuned["prompt"]):])
    on = client.completions.create(model="served", prompt="ROMEO:", max_tokens=12, temperature=0,
                                   extra_body={"ignore_eos": True})
    assert on.choices[0].finish_reason == "length" and on.usage.completion_tokens == 12
  finally:
    server.stop()


def huggingface_text():
  from hf_checkpoints import text
  return text()[:300]


def test_a_sentencepiece_converted_tokenizer_gives_autotokenizers_ids(tmp_path):
  """Llama 2's and TinyLlama's tokenizer.json: a SentencePiece BPE converted by transformers (spaces as ▁
  and a ▁ before the text, unknown characters as <0x..> bytes), BOS added by its post-processor."""
  from tokenizers import Tokenizer, decoders, models as tok_models, normalizers, processors, trainers
  from hf_checkpoints import text
  from test_huggingface import SAMPLES
  bytes_ = [f"<0x{i:02X}>" for i in range(256)]
  sp = Tokenizer(tok_models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
  sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                  decoders.Strip(" ", 1, 0)])
  sp.train_from_iterator(text().splitlines(), trainers.BpeTrainer(
      vocab_size=700, special_tokens=["<unk>", "<s>", "</s>", *bytes_], show_progress=False))
  sp.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  transformers.PreTrainedTokenizerFast(tokenizer_object=sp, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>").save_pretrained(str(tmp_path))
  ours_, reference_ = tokenizers.load(str(tmp_path)), transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert (ours_.bos_id, ours_.eos_id) == (1, 2)
  for sample in [text()[:2000], "ROMEO: What light", *SAMPLES]:
    ids = ours_.encode(sample)
    assert ids.tolist() == reference_(sample)["input_ids"], sample[:40]
    assert ours_.decode(ids[1:]) == reference_.decode(ids[1:].tolist()), sample[:40]
  assert any(t.startswith("<0x") for t in reference_.convert_ids_to_tokens(ours_.encode(SAMPLES[1])))  # byte fallback
