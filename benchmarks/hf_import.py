"""Importing a big Hugging Face checkpoint: load time and peak host memory, under FSDP on 8 devices.

Run:  python -m benchmarks.hf_import [--layers=24 --dim=1024] [--repeats=3]
      python -m benchmarks.hf_import --family=llama   # TinyLlama-1.1B-shaped, in 3 shard files

Writes a GPT-2-medium-shaped checkpoint (24 layers x 1024, vocabulary 50,257, context 1,024:
355 M parameters, 1.4 GB in float32), or with --family=llama a TinyLlama-1.1B-shaped one (22 layers x
2,048, 32 query and 4 key/value heads, SwiGLU 5,632, vocabulary 32,000: 1.1 B parameters, 4.4 GB in
float32, sharded as the hub's big checkpoints are, with model.safetensors.index.json), of random
weights with `safetensors.numpy` (no torch), then,
in fresh processes with 8 simulated CPU devices and `sharding.fsdp=8`, loads it with
`huggingface.load` into abstract parameters (nothing initialised first): each tensor is read,
transposed if need be and put onto its parameter's final sharding, one at a time. Each process
reports its load time and its peak resident memory (VmHWM) before and after the load;
medians over --repeats, as a markdown table. Target: peak <= 1.5x the file size.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

flags.DEFINE_enum("family", "gpt2", ["gpt2", "llama"], "The checkpoint's architecture.")
flags.DEFINE_integer("layers", 0, "Transformer blocks; 0 = the family's (24 GPT-2, 22 Llama).")
flags.DEFINE_integer("dim", 0, "Width, heads of 64; 0 = the family's (1,024 GPT-2, 2,048 Llama).")
flags.DEFINE_integer("repeats", 3, "Load processes (medians are reported).")
flags.DEFINE_string("load", "", "Internal: load the checkpoint in this directory and print JSON.")
FLAGS = flags.FLAGS
VOCAB, CONTEXT = 50257, 1024
LLAMA = dict(vocab=32_000, kv_heads=4, mlp_dim=5632, shards=3)  # TinyLlama-1.1B's (its model card)


def write_checkpoint(directory, layers, dim):
  from safetensors.numpy import save_file
  rng = np.random.default_rng(0)
  normal = lambda *shape: (rng.standard_normal(shape, np.float32) * 0.02)
  tensors = {"transformer.wte.weight": normal(VOCAB, dim), "transformer.wpe.weight": normal(CONTEXT, dim),
             "transformer.ln_f.weight": np.ones(dim, np.float32), "transformer.ln_f.bias": np.zeros(dim, np.float32)}
  for i in range(layers):
    h = f"transformer.h.{i}"
    for ln in ("ln_1", "ln_2"):
      tensors[f"{h}.{ln}.weight"], tensors[f"{h}.{ln}.bias"] = np.ones(dim, np.float32), np.zeros(dim, np.float32)
    for name, shape in (("attn.c_attn", (dim, 3 * dim)), ("attn.c_proj", (dim, dim)), ("mlp.c_fc", (dim, 4 * dim)),
                        ("mlp.c_proj", (4 * dim, dim))):
      tensors[f"{h}.{name}.weight"], tensors[f"{h}.{name}.bias"] = normal(*shape), np.zeros(shape[1], np.float32)
  save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  config = dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", n_layer=layers, n_head=dim // 64, n_embd=dim,
                n_positions=CONTEXT, vocab_size=VOCAB, layer_norm_epsilon=1e-5, activation_function="gelu_new")
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  return sum(x.size for x in tensors.values())


def write_llama(directory, layers, dim):
  """A Llama-shaped checkpoint in LLAMA["shards"] files, each written from its own tensors only (the
  writer never holds the whole model), and the index that names each tensor's file."""
  from safetensors.numpy import save_file
  rng = np.random.default_rng(0)
  heads, mlp, vocab = dim // 64, LLAMA["mlp_dim"], LLAMA["vocab"]
  kv = min(LLAMA["kv_heads"], heads)
  shapes = {"model.embed_tokens.weight": (vocab, dim), "model.norm.weight": (dim,), "lm_head.weight": (vocab, dim)}
  for i in range(layers):
    h = f"model.layers.{i}"
    shapes |= {f"{h}.input_layernorm.weight": (dim,), f"{h}.post_attention_layernorm.weight": (dim,),
               f"{h}.self_attn.q_proj.weight": (dim, dim), f"{h}.self_attn.k_proj.weight": (kv * 64, dim),
               f"{h}.self_attn.v_proj.weight": (kv * 64, dim), f"{h}.self_attn.o_proj.weight": (dim, dim),
               f"{h}.mlp.gate_proj.weight": (mlp, dim), f"{h}.mlp.up_proj.weight": (mlp, dim),
               f"{h}.mlp.down_proj.weight": (dim, mlp)}
  names, n, weight_map = list(shapes), LLAMA["shards"], {}
  for s in range(n):
    file = f"model-{s + 1:05d}-of-{n:05d}.safetensors"
    part = names[s * len(names) // n:(s + 1) * len(names) // n]
    save_file({k: np.ones(shapes[k], np.float32) if len(shapes[k]) == 1 else
               rng.standard_normal(shapes[k], np.float32) * 0.02 for k in part},
              os.path.join(directory, file), metadata={"format": "pt"})
    weight_map |= dict.fromkeys(part, file)
  with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": 4 * sum(int(np.prod(x)) for x in shapes.values())},
               "weight_map": weight_map}, f)
  config = dict(architectures=["LlamaForCausalLM"], model_type="llama", num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, hidden_size=dim, intermediate_size=mlp,
                max_position_embeddings=2048, vocab_size=vocab, rms_norm_eps=1e-5, hidden_act="silu",
                tie_word_embeddings=False, rope_theta=10_000.0)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  return sum(int(np.prod(x)) for x in shapes.values())


def peak_rss_mb():
  """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
  parent through fork and exec, so a child of the process that wrote the checkpoint would start at its peak."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def load(directory):
  """In a process of its own: load onto fsdp=8 shardings, report time and memory."""
  import jax
  from flax import linen as nn

  from bigmodel import huggingface, models, sharding
  rss_mb = peak_rss_mb
  model_config = huggingface.model_config(directory)
  model_config["num_outputs"] = model_config["vocab_size"]
  model = models.build(model_config)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros((1, 8), jax.numpy.int32)))
  mesh = sharding.make_mesh(dict(sharding.DEFAULTS, data=1, fsdp=8))
  abstract = nn.unbox(boxed)["params"]
  shardings = sharding.param_shardings(abstract, nn.get_partition_spec(boxed)["params"], mesh,
                                       sharding.DEFAULTS["rules"])
  target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), abstract, shardings)
  before = rss_mb()
  start = time.perf_counter()
  params, _, _ = huggingface.load(directory, model_config, target)
  jax.block_until_ready(params)
  seconds = time.perf_counter() - start
  embed = params["embed"]["embedding"]
  print(json.dumps(dict(seconds=seconds, rss_before_mb=before, rss_peak_mb=rss_mb(),
                        devices=len(jax.devices()), embed_shard=list(embed.addressable_shards[0].data.shape),
                        parameters=sum(x.size for x in jax.tree.leaves(params)))))


def main(argv):
  del argv
  if FLAGS.load:
    return load(FLAGS.load)
  with tempfile.TemporaryDirectory(prefix="bigmodel-hf-import-") as directory:
    start = time.perf_counter()
    llama = FLAGS.family == "llama"
    layers, dim = FLAGS.layers or (22 if llama else 24), FLAGS.dim or (2048 if llama else 1024)
    n = (write_llama if llama else write_checkpoint)(directory, layers, dim)
    file_mb = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)
                  if f.endswith(".safetensors")) / 2**20
    print(f"wrote {n:,} parameters ({file_mb:,.0f} MB) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    runs = []
    for _ in range(FLAGS.repeats):
      out = subprocess.run([sys.executable, "-m", "benchmarks.hf_import", f"--load={directory}"], env=env,
                           capture_output=True, text=True, check=True).stdout
      runs.append(json.loads(out.strip().splitlines()[-1]))
      print(runs[-1], file=sys.stderr)
  med = lambda k: statistics.median(r[k] for r in runs)
  print(f"| checkpoint | parameters | file | devices (fsdp) | load time | peak RSS before load | peak RSS after | "
        f"peak / file |\n|---|---|---|---|---|---|---|---|\n"
        f"| {'Llama' if llama else 'GPT-2'} {layers} x {dim}, float32 | {runs[0]['parameters']:,} | {file_mb:,.0f} MB | "
        f"{runs[0]['devices']} | {med('seconds'):.1f} s | {med('rss_before_mb'):,.0f} MB | "
        f"{med('rss_peak_mb'):,.0f} MB | {med('rss_peak_mb') / file_mb:.2f}x |")
  print(f"\nmedians of {len(runs)} processes; token embedding shard per device: {runs[0]['embed_shard']}")


if __name__ == "__main__":
  app.run(main)
