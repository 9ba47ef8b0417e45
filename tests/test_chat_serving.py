"""POST /v1/chat/completions and published models served directly: `python -m bigmodel.serve --model=<a Hugging
Face checkpoint dir or a .gguf file>` in a real process, asked over real HTTP by the official `openai` client,
answers a chat as transformers' greedy `generate` continues the same conversation rendered by the model's chat
template, streamed (role, deltas, finish) and not; bad conversations get OpenAI's 400; `bigmodel.generate
--chat` answers in the terminal; and the real SmolLM2-135M-Instruct GGUF says Paris (slow tier)."""
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import openai
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bigmodel import artifact, published  # noqa: E402
from bigmodel.serving.app import App  # noqa: E402
from bigmodel.serving.http import make_server  # noqa: E402
from bigmodel.serving.options import Options  # noqa: E402
from conftest import ROOT, XLA_TEST_FLAGS  # noqa: E402
from hf_checkpoints import smollm2_gguf, tiny_llama  # noqa: E402
from test_serve import Server, client_at, request_at  # noqa: E402

# A template of Llama 2's kind over the tiny tokenizer's <s> and </s>: each turn closed by </s>, the end of turn.
TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] | trim }}</s>\n{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
CONVERSATION = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "ROMEO: What light?"}]
NEW = 24  # tokens a reply draws in the tiny model's tests (it is random: it never ends its turn early)


def with_template(directory, template=TEMPLATE):
  """The checkpoint in `directory` with `template` as its tokenizer_config.json's chat_template (None: none)."""
  path = os.path.join(directory, "tokenizer_config.json")
  config = json.load(open(path))
  config.pop("chat_template", None)
  if template:
    config["chat_template"] = template
  json.dump(config, open(path, "w"), indent=2)
  return str(directory)


def reference_reply(directory, messages, max_new_tokens):
  """(transformers' greedy reply to `messages` on the checkpoint, its prompt's length, its tokens' count)."""
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
  ids = list(out["input_ids"] if hasattr(out, "keys") else out)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
  end = tok.convert_tokens_to_ids("</s>")
  with torch.no_grad():
    row = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end,
                         pad_token_id=end)[0, len(ids):].tolist()
  return tok.decode([t for t in row if t != end]), len(ids), len(row)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """The published models' export cache of this module ($BIGMODEL_CACHE, which the servers inherit)."""
  before = os.environ.get("BIGMODEL_CACHE")
  os.environ["BIGMODEL_CACHE"] = str(tmp_path_factory.mktemp("bigmodel-cache"))
  yield os.environ["BIGMODEL_CACHE"]
  if before is None:
    del os.environ["BIGMODEL_CACHE"]
  else:
    os.environ["BIGMODEL_CACHE"] = before


@pytest.fixture(scope="module")
def llama(tmp_path_factory, cache):
  """A tiny random Llama checkpoint with a chat template, served from its directory, and transformers' reply."""
  root = tmp_path_factory.mktemp("chat")
  directory = with_template(tiny_llama("llama", root / "tiny-llama"))
  server = Server(directory, root / "serve.log", "--slots=2", "--lengths=64", f"--max_new_tokens={NEW}")
  try:
    server.wait(timeout=300)
    yield dict(directory=directory, server=server, root=root, api=client_at(server.port),
               reference=reference_reply(directory, CONVERSATION, NEW))
  finally:
    server.stop()


def test_a_checkpoint_dir_is_served_and_a_chat_equals_transformers_greedy_reply(llama):
  api, (text, prompt_tokens, tokens) = llama["api"], llama["reference"]
  assert len(text) > 10 and tokens == NEW  # the random model draws all its tokens, none of them its end of turn
  name = api.models.list().data[0].id
  assert name == "tiny-llama"
  reply = api.chat.completions.create(model=name, messages=CONVERSATION, max_tokens=NEW, temperature=0)
  choice = reply.choices[0]
  assert reply.object == "chat.completion" and choice.message.role == "assistant"
  assert choice.message.content == text and choice.finish_reason == "length"
  assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, tokens)
  newer = api.chat.completions.create(model=name, messages=CONVERSATION, max_completion_tokens=5, temperature=0)
  assert newer.usage.completion_tokens == 5 and text.startswith(newer.choices[0].message.content)


def test_a_streamed_chat_sends_the_role_then_the_same_text_then_its_finish_and_done(llama):
  api, (text, _, tokens) = llama["api"], llama["reference"]
  chunks = list(api.chat.completions.create(model="tiny-llama", messages=CONVERSATION, max_tokens=NEW, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
  assert all(c.object == "chat.completion.chunk" for c in chunks)
  assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
  content = [c.choices[0] for c in chunks[1:-2]]
  assert all(c.delta.content and c.finish_reason is None for c in content)
  assert "".join(c.delta.content for c in content) == text
  assert chunks[-2].choices[0].finish_reason == "length" and not chunks[-2].choices[0].delta.content
  assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == tokens
  raw = request_at_stream(llama["server"].port, {"model": "tiny-llama", "messages": CONVERSATION, "max_tokens": 2,
                                                 "stream": True})
  assert raw.endswith("data: [DONE]\n\n")


def request_at_stream(port, body):
  import http.client
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
  conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
  response = conn.getresponse()
  assert response.status == 200
  return response.read().decode()


def test_stop_strings_n_and_seed_as_in_completions(llama):
  api, (text, _, _) = llama["api"], llama["reference"]
  stop = text[len(text) // 2:len(text) // 2 + 3]
  cut = api.chat.completions.create(model="tiny-llama", messages=CONVERSATION, max_tokens=NEW, temperature=0, stop=stop)
  assert cut.choices[0].finish_reason == "stop" and cut.choices[0].message.content == text[:text.find(stop)]
  drawn = [api.chat.completions.create(model="tiny-llama", messages=CONVERSATION, max_tokens=8, temperature=1.0,
                                       seed=7, n=2) for _ in range(2)]
  assert [c.message.content for c in drawn[0].choices] == [c.message.content for c in drawn[1].choices]
  assert [c.index for c in drawn[0].choices] == [0, 1] and drawn[0].usage.completion_tokens == 16


@pytest.mark.parametrize("messages, says", [
    (None, "Missing field(s): messages"),
    ([], "non-empty list"),
    ([{"content": "Hi"}], "role None"),
    ([{"role": "wizard", "content": "Hi"}], "role 'wizard'"),
    ([{"role": "user", "content": ["Hi"]}], "content must be a string"),
    ([{"role": "user", "content": None}], "content must be a string"),
    ("Hi", "non-empty list"),
])
def test_bad_messages_get_openais_400_naming_the_problem(llama, messages, says):
  body = {"model": "tiny-llama", **({} if messages is None else {"messages": messages})}
  status, reply = request_at(llama["server"].port, "POST", "/v1/chat/completions", body)
  assert status == 400 and says in reply["error"]["message"], reply
  assert reply["error"]["type"] == "invalid_request_error" and reply["error"]["param"] == "messages"
  with pytest.raises(openai.BadRequestError):
    llama["api"].chat.completions.create(model="tiny-llama", messages=[{"role": "wizard", "content": "Hi"}])
  assert request_at(llama["server"].port, "GET", "/healthz")[0] == 200


def test_a_model_without_a_chat_template_gets_a_400_that_says_so(llama, tmp_path):
  plain = with_template(shutil.copytree(llama["directory"], tmp_path / "plain"), None)
  model = artifact.load(published.model_dir(plain, context=64, platforms=("cpu",), out=str(tmp_path / "export")),
                        [1], [64])
  assert model.chat is None
  app_ = App(model, Options(model_name="plain", slots=1, max_new_tokens=4))
  httpd = make_server(app_.routes(), port=0)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  try:
    status, reply = request_at(httpd.server_address[1], "POST", "/v1/chat/completions",
                               {"model": "plain", "messages": CONVERSATION})
    assert status == 400 and "has no chat template" in reply["error"]["message"] and "/v1/completions" in \
        reply["error"]["message"]
  finally:
    httpd.shutdown()
    httpd.server_close()


def test_the_export_carries_the_template_and_its_end_of_turn_and_is_cached_by_content(llama, tmp_path):
  directory = llama["directory"]
  first = published.cached_dir(directory)  # at the server's default --max_context
  assert os.path.exists(os.path.join(first, "model.json")), "the server exported into the cache"
  spec = json.load(open(os.path.join(first, "model.json")))
  end = transformers.AutoTokenizer.from_pretrained(directory).convert_tokens_to_ids("</s>")
  assert spec["input"]["end_of_turn_id"] == end and spec["source"]["checkpoint"] == os.path.abspath(directory)
  assert artifact.load(first, [1], [64]).chat.source == TEMPLATE
  assert published.cached_dir(directory, 64) != first  # another context: another export
  changed = with_template(shutil.copytree(directory, tmp_path / "tiny-llama"), TEMPLATE + " ")
  assert os.path.basename(published.cached_dir(changed)) != os.path.basename(first)  # another file: another export


@pytest.mark.slow  # two CLI processes, each compiling the model (25 s of the fast tier)
def test_the_generate_cli_chats_through_the_template_a_line_a_turn(llama):
  directory = llama["directory"]
  second = [*CONVERSATION[1:], {"role": "assistant", "content": None}, {"role": "user", "content": "And then?"}]
  first_text = reference_reply(directory, CONVERSATION[1:], 8)[0]
  second[1]["content"] = first_text
  second_text = reference_reply(directory, second, 8)[0]
  proc = subprocess.run([sys.executable, "-m", "bigmodel.generate", f"--model={directory}", "--chat", "--greedy",
                         "--max_new_tokens=8"], input="ROMEO: What light?\nAnd then?\n", capture_output=True,
                        text=True, cwd=ROOT, env=dict(os.environ, XLA_FLAGS=XLA_TEST_FLAGS), timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout == f"{first_text}\n{second_text}\n"


@pytest.mark.slow  # a 98 MB model exported and compiled in a server process
def test_smollm2_gguf_served_directly_says_paris_to_the_openai_client_streamed_and_not(cache, tmp_path):
  path = smollm2_gguf()
  server = Server(path, tmp_path / "serve.log", "--slots=2", "--lengths=64", "--max_new_tokens=32",
                  "--max_context=256")
  try:
    server.wait(timeout=600)
    api = client_at(server.port)
    name = api.models.list().data[0].id
    ask = dict(model=name, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0)
    reply = api.chat.completions.create(**ask)
    assert reply.choices[0].message.content == "The capital of France is Paris."
    assert reply.choices[0].finish_reason == "stop"  # at <|im_end|>, the template's end of turn
    chunks = list(api.chat.completions.create(**ask, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The capital of France is Paris."
    assert chunks[-1].choices[0].finish_reason == "stop"
  finally:
    server.stop()
