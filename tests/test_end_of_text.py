"""End of text: generation stops at the tokenizer's end-of-text token where transformers' generate stops,
in bigmodel.generate (function and CLI), the exported artifact and the server (finish_reason "stop", the
token's text left out); `ignore_eos` goes on to max_tokens ("length"); an exported config.json names the
token. The model: the tiny random GPT-2 of hf_checkpoints, edited so that greedy decoding reaches
<|endoftext|> after a few tokens (`eos_checkpoint`)."""
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bigmodel import artifact, export, generate, runs, tokenizers  # noqa: E402
from bigmodel.train import train_and_evaluate  # noqa: E402
from conftest import run_cli  # noqa: E402
from hf_checkpoints import bert_dir, gpt2_dir  # noqa: E402,F401 (fixtures)
from test_huggingface import ours, readme_config  # noqa: E402
from test_serve import Server  # noqa: E402

PROMPT = "ROMEO:\nWhat light"
NEW = 20  # tokens asked for: more than the checkpoint's greedy continuation takes to reach <|endoftext|>


def greedy(model, ids, steps):
  """`steps` argmax tokens after `ids`, each from a fresh forward pass: no end-of-text handling at all."""
  ids = list(ids)
  with torch.no_grad():
    for _ in range(steps):
      ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
  return ids


def reference(directory, prompt, new=NEW, **kw):
  """transformers' greedy generate of `new` tokens after `prompt`, stopping at the config's eos_token_id."""
  model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
  with torch.no_grad():
    return model.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False, **kw)[0].tolist()


@pytest.fixture(scope="module")
def eos_checkpoint(gpt2_dir, tmp_path_factory):
  """gpt2_dir's GPT-2 with two rows of its tied embedding swapped: <|endoftext|>'s and that of the token
  its greedy continuation of PROMPT first draws after a few steps (a token not seen before, drawn while
  <|endoftext|> has not been). Nothing before that step sees either row, so greedy decoding is as it was,
  and then draws <|endoftext|>. Returns (directory, prompt ids, eos id, tokens drawn up to and with it)."""
  d = str(tmp_path_factory.mktemp("gpt2_eos"))
  model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
  eos, prompt = model.config.eos_token_id, tokenizers.load(gpt2_dir).encode(PROMPT).tolist()
  ids = greedy(model, prompt, NEW)
  P = len(prompt)
  k = next(k for k in range(3, NEW - 3) if ids[P + k] not in ids[:P + k] and eos not in ids[:P + k + 1])
  with torch.no_grad():
    wte = model.transformer.wte.weight
    wte[[ids[P + k], eos]] = wte[[eos, ids[P + k]]].clone()
  model.save_pretrained(d)
  for name in os.listdir(gpt2_dir):
    if not name.endswith(".safetensors") and name != "config.json":
      shutil.copy(os.path.join(gpt2_dir, name), d)
  return d, prompt, eos, k + 1


def test_the_tokenizers_end_of_text_token_is_transformers_eos_token(gpt2_dir, bert_dir, tmp_path):
  for directory in (gpt2_dir, bert_dir):
    assert tokenizers.load(directory).eos_id == transformers.AutoTokenizer.from_pretrained(directory).eos_token_id
  assert tokenizers.load(gpt2_dir).eos_id == 0 and tokenizers.load(bert_dir).eos_id is None  # BERT has none
  # The gpt2 hub repo's tokenizer_config.json names no special tokens: GPT2Tokenizer takes <|endoftext|>.
  shutil.copy(os.path.join(gpt2_dir, "tokenizer.json"), tmp_path)
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
  assert tokenizers.load(str(tmp_path)).eos_id == 0
  for tok in (tokenizers.build("char", "abc"), tokenizers.build("byte")):
    assert tok.eos_id is None


@pytest.mark.parametrize("use_cache", [True, pytest.param(False, marks=pytest.mark.slow)])  # without: full suite
def test_greedy_generation_stops_at_end_of_text_where_transformers_generate_does(eos_checkpoint, use_cache):
  directory, prompt, eos, drawn = eos_checkpoint
  want = reference(directory, prompt)
  assert len(want) == len(prompt) + drawn < len(prompt) + NEW and want[-1] == eos  # it does stop there
  # A second row that goes on: the first, ended, must not change what it draws.
  other = np.random.RandomState(0).randint(1, 500, len(prompt)).tolist()
  other_want = reference(directory, other)
  assert len(other_want) > len(want)
  vocab = transformers.AutoConfig.from_pretrained(directory).vocab_size
  model, variables = ours(directory, np.array([prompt]), num_outputs=vocab)
  out = generate.generate(model, variables["params"], np.array([prompt, other]), NEW, temperature=0.0,
                          eos_id=eos, use_cache=use_cache)
  assert out.shape == (2, len(prompt) + NEW)
  assert out[0].tolist() == want + [-1] * (NEW - drawn)  # padding after its end
  assert out[1].tolist() == other_want + [-1] * (len(prompt) + NEW - len(other_want))
  # Without an eos_id (as with ignore_eos) it runs on past <|endoftext|>, to NEW tokens.
  on = generate.generate(model, variables["params"], np.array([prompt]), NEW, temperature=0.0, use_cache=use_cache)
  assert on[0, :len(want)].tolist() == want and on.shape == (1, len(prompt) + NEW) and on.min() >= 0


@pytest.fixture(scope="module")
def eos_run(eos_checkpoint, data_dir, tmp_path_factory):
  """A run imported from eos_checkpoint with the README's fine-tuning config, one step at a learning rate
  of 1e-30 (it must be > 0; float32 weights of ~0.1 do not move), exported as an artifact and served."""
  directory, *_ = eos_checkpoint
  root = tmp_path_factory.mktemp("eos_run")
  c = readme_config("configs/shakespeare/gpt2_finetune.py", **{
      "init.hf": directory, "data.data_dir": data_dir, "data.seq_len": 32, "data.batch_size": 2,
      "data.eval_batch_size": 2, "optimizer.learning_rate": 1e-30, "optimizer.warmup_steps": 0})
  c.total_steps = c.eval_every = c.checkpoint_every = c.log_every = 1
  train_and_evaluate(c, str(root / "run"))
  export.export(str(root / "run"), str(root / "served"), platforms=("cpu",))
  server = Server(root / "served", root / "server.log", "--slots=2", "--batch_sizes=1", "--lengths=16",
                  "--model_name=eos")
  try:
    yield dict(root=root, run=str(root / "run"), served=str(root / "served"), server=server)
  finally:
    server.stop()


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_the_cli_the_artifact_and_the_exported_checkpoint_stop_at_end_of_text(eos_checkpoint, eos_run):
  directory, prompt, eos, drawn = eos_checkpoint
  want = reference(directory, prompt)
  tok = runs.load(eos_run["run"]).tokenizer
  assert tok.eos_id == eos
  # The CLI prints the prompt and what came before <|endoftext|>; --ignore_eos prints all NEW tokens.
  cli = lambda *flags: run_cli("bigmodel.generate", f"--workdir={eos_run['run']}", f"--prompt={PROMPT}",
                               f"--max_new_tokens={NEW}", "--greedy", *flags).stdout
  assert cli() == tok.decode(want[:-1]) + "\n"
  run = runs.load(eos_run["run"])
  on = generate.generate(run.model, run.params, np.array([prompt]), NEW, temperature=0.0)[0]
  assert on[:len(want)].tolist() == want and cli("--ignore_eos") == tok.decode(on) + "\n"
  # The artifact knows its end-of-text token without asking the tokenizer.
  served = artifact.load(eos_run["served"], batch_sizes=(1,), lengths=(16,))
  assert json.load(open(os.path.join(eos_run["served"], artifact.SPEC)))["input"]["eos_id"] == eos
  assert served.generate([prompt], NEW, temperature=0.0) == [want]
  assert served.generate([prompt], NEW, temperature=0.0, ignore_eos=True) == [on.tolist()]
  # Handed back to transformers, config.json names the token, so that its generate stops there unasked.
  export.export_hf(eos_run["run"], str(eos_run["root"] / "hf"))
  config = json.load(open(eos_run["root"] / "hf" / "config.json"))
  assert config["eos_token_id"] == config["bos_token_id"] == eos
  assert reference(str(eos_run["root"] / "hf"), prompt) == want


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_the_server_stops_at_end_of_text_with_finish_reason_stop_unless_ignore_eos(eos_checkpoint, eos_run):
  directory, prompt, eos, drawn = eos_checkpoint
  want = reference(directory, prompt)
  tok, server = tokenizers.load(directory), eos_run["server"]
  text = tok.decode(want[len(prompt):-1])  # the completion, without <|endoftext|>
  body = {"model": "eos", "prompt": PROMPT, "max_tokens": NEW, "temperature": 0}
  status, out = server.request("POST", "/v1/completions", body)
  assert status == 200, out
  assert out["choices"][0]["text"] == text and out["choices"][0]["finish_reason"] == "stop"
  assert out["usage"]["completion_tokens"] == drawn  # <|endoftext|> counts: it was drawn
  # Streamed (a raw HTTP request, read to [DONE]): the same text, and the last chunk says why it ended.
  chunks = stream(server, {**body, "stream": True})
  assert "".join(c["choices"][0]["text"] for c in chunks) == text
  assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (drawn - 1) + ["stop"]
  status, out = server.request("POST", "/v1/completions", {**body, "ignore_eos": True})
  assert status == 200 and out["choices"][0]["finish_reason"] == "length", out
  assert out["usage"]["completion_tokens"] == NEW and out["choices"][0]["text"].startswith(text + "<|endoftext|>")
  status, out = server.request("POST", "/v1/generate", {"prompt": PROMPT, "max_new_tokens": NEW, "temperature": 0})
  assert status == 200 and out["finish_reason"] == "stop" and out["completion"] == text, out
  assert out["text"] == tok.decode(want[:-1]) and out["new_tokens"] == drawn
  status, out = server.request("POST", "/v1/completions", {**body, "ignore_eos": "yes"})
  assert status == 400 and "ignore_eos must be true or false" in out["error"]["message"], out
  status, info = server.request("GET", "/v1/model")
  assert info["input"]["eos_id"] == eos


def stream(server, body):
  """The JSON chunks of a streamed completion, over one real HTTP request."""
  import http.client
  if server.port is None:
    server.wait()
  conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
  try:
    conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    events = conn.getresponse().read().decode().split("\n\n")
  finally:
    conn.close()
  data = [e.removeprefix("data: ") for e in events if e.startswith("data: ")]
  assert data[-1] == "[DONE]", data
  return [json.loads(d) for d in data[:-1]]
