"""Export and serve: the artifact runs without the model's code, and the HTTP server answers right,
batches, refuses bad input with a 4xx and stays up."""
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from bigmodel import artifact, checkpoint, export, generate, models
from bigmodel.train import train_and_evaluate
from conftest import ROOT, XLA_TEST_FLAGS, run_cli, tiny_config

SONG = "".join(f"{n} green bottles hanging on the wall\n" for n in ("ten", "nine", "eight", "seven")) * 30


class Server:
  """`python -m bigmodel.serve` in a subprocess on a free loopback port (--port=0; read from its log)."""

  def __init__(self, model_dir, log_path, *flags):
    self.log_path = log_path
    self.log = open(log_path, "w")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "bigmodel.serve", f"--model={model_dir}", "--port=0", *flags], cwd=ROOT,
        env=dict(os.environ, XLA_FLAGS=XLA_TEST_FLAGS), stdout=self.log, stderr=subprocess.STDOUT)
    self.port = None

  def wait(self, timeout=180):
    """Waits until it serves (it has compiled every bucket) and /healthz answers."""
    deadline = time.time() + timeout
    while self.port is None:
      found = re.search(r"on http://127\.0\.0\.1:(\d+)", open(self.log_path).read())
      if found:
        self.port = int(found.group(1))
        break
      assert self.proc.poll() is None, open(self.log_path).read()[-3000:]
      assert time.time() < deadline, "the server did not start"
      time.sleep(0.1)
    assert self.request("GET", "/healthz")[0] == 200

  def request(self, method, path, body=None, raw=None):
    """(status, parsed JSON reply); `body` is sent as JSON, `raw` as given."""
    if self.port is None:
      self.wait()
    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
    try:
      data = raw if raw is not None else None if body is None else json.dumps(body).encode()
      conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
      response = conn.getresponse()
      return response.status, json.loads(response.read())
    finally:
      conn.close()

  def stop(self):
    self.proc.terminate()
    self.proc.wait(timeout=30)
    self.log.close()


@pytest.fixture(scope="module")
def served(data_dir, tmp_path_factory):
  """A tiny MNIST-1D CNN and a tiny char GPT, trained a few steps, exported and served."""
  root = tmp_path_factory.mktemp("serve")
  servers = []
  try:
    cnn = str(root / "cnn")
    train_and_evaluate(tiny_config(data_dir, total_steps=20, eval_every=20, checkpoint_every=20), cnn)
    export.export(cnn, str(root / "cnn_model"))
    servers.append(Server(root / "cnn_model", root / "cnn.log", "--batch_sizes=1,8", "--max_body_bytes=100000"))

    (root / "song.txt").write_text(SONG)
    lm = str(root / "lm")
    c = tiny_config(data_dir, total_steps=30, eval_every=30, checkpoint_every=30, log_every=10)
    c.data = dict(name="text_files", files=(str(root / "song.txt"),), tokenizer="char", seq_len=16, batch_size=16,
                  eval_batch_size=64, eval_split="val", data_dir=data_dir)
    c.model = dict(name="gpt", num_layers=1, num_heads=2, dim=32, max_len=16)
    c.loss = "lm_xent"
    c.optimizer = dict(name="adamw", learning_rate=3e-3)
    train_and_evaluate(c, lm)
    export.export(lm, str(root / "lm_model"))
    servers.append(Server(root / "lm_model", root / "lm.log", "--batch_sizes=1,4", "--max_new_tokens=40"))
    # Waited for on first use: the CNN's tests run while the GPT's server compiles.
    yield dict(root=root, cnn=cnn, lm=lm, cnn_server=servers[0], lm_server=servers[1])
  finally:
    for server in servers:
      server.stop()


def signals(n, seed=0):
  return np.random.default_rng(seed).normal(size=(n, 40)).astype(np.float32)


def cnn_probs(workdir, x):
  """The in-process model's class probabilities, straight from the checkpoint."""
  config = json.load(open(os.path.join(workdir, "config.json")))
  model = models.build({**config["model"], "num_outputs": 10})
  params, _, _ = checkpoint.read_weights(workdir, None)
  return np.asarray(jax.nn.softmax(model.apply({"params": params}, x)))


def test_the_artifact_runs_in_a_fresh_process_without_the_models_code(served, tmp_path):
  x = signals(5)
  np.save(tmp_path / "x.npy", x)
  script = f"""
import sys
import numpy as np
from bigmodel import artifact
model = artifact.load({str(served["root"] / "cnn_model")!r}, batch_sizes=[8])
np.save({str(tmp_path / "probs.npy")!r}, model.classify(np.load({str(tmp_path / "x.npy")!r})))
loaded = [m for m in sys.modules if m.split(".")[0] in ("flax", "optax", "orbax") or m.startswith("bigmodel.models")]
assert not loaded, loaded
"""
  subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, env=dict(os.environ, XLA_FLAGS=XLA_TEST_FLAGS))
  np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), cnn_probs(served["cnn"], x), atol=1e-5)


def test_classify_over_http_gives_the_models_probabilities_and_label(served):
  server, x = served["cnn_server"], signals(3, seed=1)
  status, info = server.request("GET", "/v1/model")
  assert status == 200 and info["task"] == "classify" and info["input"]["shape"] == [40]
  assert info["labels"] == [str(i) for i in range(10)] and info["batch_sizes"] == [1, 8]
  expected = cnn_probs(served["cnn"], x)
  for x_S, p_C in zip(x, expected):
    status, out = server.request("POST", "/v1/classify", {"input": x_S.tolist()})
    assert status == 200, out
    probs = np.array(list(out["probabilities"].values()))
    assert list(out["probabilities"]) == info["labels"] and probs.sum() == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(probs, p_C, atol=1e-5)
    assert out["label"] == str(np.argmax(p_C)) and out["index"] == np.argmax(p_C)


def test_200_concurrent_requests_all_succeed_while_healthz_answers(served):
  server, x = served["cnn_server"], signals(8, seed=2)
  expected = cnn_probs(served["cnn"], x).argmax(-1)
  health, stop = [], threading.Event()

  def poll():
    while not stop.is_set():
      start = time.perf_counter()
      health.append((server.request("GET", "/healthz")[0], time.perf_counter() - start))
      time.sleep(0.02)

  poller = threading.Thread(target=poll)
  poller.start()
  try:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      replies = list(pool.map(lambda i: server.request("POST", "/v1/classify", {"input": x[i % 8].tolist()}),
                              range(200)))
  finally:
    stop.set()
    poller.join()
  assert [status for status, _ in replies] == [200] * 200
  assert [out["index"] for _, out in replies] == [expected[i % 8] for i in range(200)]
  assert health and all(status == 200 for status, _ in health) and max(t for _, t in health) < 5
  _, counts = server.request("GET", "/healthz")
  assert counts["batches"] < counts["requests"], counts  # concurrent requests shared model calls


def test_a_missing_or_corrupt_model_dir_fails_at_start_with_a_clear_message(served, tmp_path):
  out = run_cli("bigmodel.serve", f"--model={tmp_path / 'nothing'}", check=False)
  assert out.returncode != 0 and "does not exist" in out.stderr and "bigmodel.export" in out.stderr
  broken = tmp_path / "broken"
  shutil.copytree(served["root"] / "cnn_model", broken)
  (broken / artifact.FUNCTION).write_bytes(b"not a jax export")
  out = run_cli("bigmodel.serve", f"--model={broken}", check=False)
  assert out.returncode != 0 and "forward.jax could not be read" in out.stderr and "Traceback" not in out.stderr
  # The other files, checked in-process.
  shutil.copy(served["root"] / "cnn_model" / artifact.FUNCTION, broken)
  (broken / artifact.WEIGHTS).write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(artifact.ArtifactError, match="weights.npz is corrupt"):
    artifact.load(str(broken))
  weights = dict(np.load(served["root"] / "cnn_model" / artifact.WEIGHTS))
  weights["params/head/kernel"] = weights["params/head/kernel"][:, :5]
  np.savez(broken / artifact.WEIGHTS, **weights)
  with pytest.raises(artifact.ArtifactError, match=r"params/head/kernel is float32\[125, 5\], the function takes"):
    artifact.load(str(broken))
  (broken / artifact.SPEC).write_text("{")
  with pytest.raises(artifact.ArtifactError, match="model.json is corrupt"):
    artifact.load(str(broken))



CLASSIFY_40 = {"input": [0.5] * 40}
BAD = [  # (server, method, path, body, status, what the error says)
    ("cnn", "POST", "/v1/classify", b'{"input": [1, 2', 400, "not valid JSON"),
    ("cnn", "POST", "/v1/classify", b"[1, 2]", 400, "must be a JSON object"),
    ("cnn", "POST", "/v1/classify", b'{"input": NaN}', 400, "NaN is not a JSON number"),
    ("cnn", "POST", "/v1/classify", {**CLASSIFY_40, "extra": 1}, 400, "Unknown field(s): extra"),
    ("cnn", "POST", "/v1/classify", {}, 400, "Missing field(s): input"),
    ("cnn", "POST", "/v1/classify", {"input": [0.5] * 39}, 400, "input has shape [39]"),
    ("cnn", "POST", "/v1/classify", {"input": [[0.5] * 40]}, 400, "input has shape [1, 40]"),
    ("cnn", "POST", "/v1/classify", {"input": [0.5] * 39 + ["a"]}, 400, "it holds strings"),
    ("cnn", "POST", "/v1/classify", {"input": [[0.5], 0.5]}, 400, "unequal lengths"),
    ("cnn", "POST", "/v1/classify", {"input": [0.5] * 39 + [None]}, 400, "nulls"),
    ("cnn", "POST", "/v1/classify", {"input": [0.5] * 20000}, 413, "the limit is 100,000"),
    ("cnn", "POST", "/v1/generate", {"prompt": "ten"}, 404, "use POST /v1/classify"),
    ("cnn", "GET", "/v1/classify", None, 405, "takes POST, not GET"),
    ("cnn", "GET", "/v2/nothing", None, 404, "No endpoint /v2/nothing"),
    ("lm", "POST", "/v1/generate", {"prompt": 5}, 400, "prompt must be a string"),
    ("lm", "POST", "/v1/generate", {"prompt": "ten green bottles"}, 400, "The prompt is 17 tokens"),
    ("lm", "POST", "/v1/generate", {"prompt": ""}, 400, "The prompt is 0 tokens"),
    ("lm", "POST", "/v1/generate", {"prompt": "TEN"}, 400, "Character 'T'"),
    ("lm", "POST", "/v1/generate", {"prompt": "ten", "max_new_tokens": 41}, 400, "max_new_tokens must be"),
    ("lm", "POST", "/v1/generate", {"prompt": "ten", "temperature": "hot"}, 400, "temperature must be a number"),
    ("lm", "POST", "/v1/generate", {"prompt": "ten", "top_p": 0}, 400, "top_p must be"),
    ("lm", "POST", "/v1/generate", {"prompt": "ten", "seed": True}, 400, "seed must be an integer"),
    ("lm", "POST", "/v1/generate", {"prompt": "ten", "beams": 4}, 400, "Unknown field(s): beams"),
]


@pytest.mark.parametrize("server,method,path,body,status,message", BAD,
                         ids=[f"{s}-{p}-{c}-{m[:24]}" for s, _, p, _, c, m in BAD])
def test_bad_requests_get_a_4xx_that_says_why_and_the_server_stays_up(served, server, method, path, body, status,
                                                                     message):
  server = served[f"{server}_server"]
  raw = body if isinstance(body, bytes) else None
  got, reply = server.request(method, path, body=None if raw else body, raw=raw)
  assert got == status and message in reply["error"], reply
  assert server.request("GET", "/healthz")[0] == 200


def test_generate_over_http_gives_bigmodel_generates_text(served):
  server = served["lm_server"]
  model, params, tok = generate.load(served["lm"])
  prompt = "ten green"  # 9 tokens + 20 new > the context of 16: the window slides
  for settings in (dict(temperature=0.0), dict(temperature=0.8, top_k=5, seed=3)):
    status, out = server.request("POST", "/v1/generate", {"prompt": prompt, "max_new_tokens": 20, **settings})
    assert status == 200, out
    ids = generate.generate(model, params, tok.encode(prompt)[None], 20, **settings)[0]
    assert out["text"] == tok.decode(ids) and out["completion"] == tok.decode(ids[9:]), (out, tok.decode(ids))
    assert out["prompt_tokens"] == 9 and out["new_tokens"] == 20
  # Batched with other requests, a request gives the text it gives alone.
  requests = [{"prompt": prompt, "max_new_tokens": 20, "temperature": 0.8, "top_k": 5, "seed": 3},
              {"prompt": "nine", "max_new_tokens": 5, "seed": 1},
              {"prompt": "seven", "max_new_tokens": 12, "top_p": 0.5}]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    replies = list(pool.map(lambda r: server.request("POST", "/v1/generate", r), requests * 2))
  assert all(status == 200 for status, _ in replies)
  assert replies[0][1]["text"] == out["text"] and replies[0] == replies[3] and replies[2] == replies[5]
