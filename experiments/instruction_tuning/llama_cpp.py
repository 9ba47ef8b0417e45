"""A run tuned here, exported as GGUF, answers in llama.cpp's server as it does in bigmodel.

  python -m bigmodel.export --workdir=runs/instruction_tuning/lora_n100_seed0 --out=tuned.gguf --format=gguf
  python -m experiments.instruction_tuning.llama_cpp --gguf=tuned.gguf \
      --llama_server=<llama.cpp>/build/bin/llama-server --answers=runs/instruction_tuning/lora_n100_seed0/answers.json

llama.cpp builds from llama-cpp-python's source distribution (`pip download --no-deps llama-cpp-python`,
vendor/llama.cpp: `cmake -B build -DLLAMA_CURL=OFF && cmake --build build --target llama-server`). Its server
renders each question with the chat template inside the GGUF file (--jinja) and answers greedily through
/v1/chat/completions; the answers are compared with the run's own greedy answers (run.py's answers.json, the
same test questions in the same order) and scored by run.py's rule.
"""
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

from absl import app, flags

from experiments.instruction_tuning import data, run

flags.DEFINE_string("gguf", None, "The tuned run's GGUF export.")
flags.DEFINE_string("llama_server", None, "llama.cpp's llama-server binary.")
flags.DEFINE_string("answers", None, "run.py's answers.json of the same run (--test_reviews, --max_words: run.py's).")


def serve(binary, path):
  """llama-server on `path` at a free port, every core, the GGUF's own chat template; its process and URL."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  log = open(os.path.join(tempfile.gettempdir(), "llama-server.log"), "w")
  proc = subprocess.Popen([binary, "-m", path, "--host", "127.0.0.1", "--port", str(port), "--jinja", "-c", "512",
                           "-t", str(os.cpu_count()), "--no-webui"], stdout=log, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}"
  for _ in range(600):
    try:
      if urllib.request.urlopen(url + "/health", timeout=5).status == 200:
        return proc, url
    except OSError:
      time.sleep(0.5)
    if proc.poll() is not None:
      break
  raise SystemExit(open(log.name).read()[-3000:])


def ask(url, question):
  body = {"messages": [{"role": "user", "content": question}], "max_tokens": run.MAX_NEW_TOKENS, "temperature": 0}
  request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                   {"Content-Type": "application/json"})
  return json.load(urllib.request.urlopen(request, timeout=300))["choices"][0]["message"]["content"]


def main(argv):
  del argv
  f = flags.FLAGS
  records = data.records("test", f.max_words, f.test_reviews)
  ours = json.load(open(f.answers))["answers"]
  proc, url = serve(f.llama_server, os.path.abspath(f.gguf))
  try:
    theirs = [ask(url, r["prompt"]) for r in records]
  finally:
    proc.terminate()
    proc.wait()
  same = sum(a.strip() == b.strip() for a, b in zip(ours, theirs))
  print(f"llama.cpp: accuracy {run.score(theirs, records)['accuracy']:.2f}; bigmodel: "
        f"{run.score(ours, records)['accuracy']:.2f}; the same answer for {same} of {len(records)} questions")
  for a, b, r in zip(ours, theirs, records):
    if a.strip() != b.strip():
      print(f"  differs: ours {a!r}, llama.cpp {b!r} ({r['completion']})")


if __name__ == "__main__":
  flags.mark_flags_as_required(["gguf", "llama_server", "answers"])
  app.run(main)
