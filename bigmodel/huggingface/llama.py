"""Llama (`LlamaForCausalLM`, `LlamaModel`), Mistral and Qwen2 <-> models/llama.py's Llama: the three
differ only in config keys (Qwen2: q/k/v biases; Mistral: a sliding window). Their q/k/v/o, gate/up/down
projections are torch Linears, each a kernel of ours; rotary positions pair channel i with i + K/2, as
our `rope` does, so no weight is permuted."""
from bigmodel import errors
from bigmodel.huggingface.tensors import linear, same
from bigmodel.models import llama

MODEL_TYPE = "llama"
MODEL_TYPES = ("llama", "mistral", "qwen2")  # model_type in config.json
ARCHITECTURES = ("LlamaForCausalLM", "LlamaModel", "MistralForCausalLM", "MistralModel", "Qwen2ForCausalLM",
                 "Qwen2Model")
MODEL = llama.Llama
PREFIX = "model."  # the task models'; a base LlamaModel saves without it
ROPE_TYPES = {"default": "none", "linear": "linear", "llama3": "llama3"}  # theirs -> our model.rope_scaling


def rope_parameters(hf):
  """The rotary settings, as transformers 5 writes them (`rope_parameters`) or as older files do
  (`rope_theta` and `rope_scaling`, whose type was once named `type`)."""
  rope = dict(hf.get("rope_parameters") or {})
  legacy = dict(hf.get("rope_scaling") or {})
  rope = {**legacy, **rope}
  rope.setdefault("rope_theta", hf.get("rope_theta", 10_000.0))
  rope.setdefault("rope_type", rope.pop("type", "default"))
  return rope


def model_config(hf, require):
  """Our `model` section for a Llama/Mistral/Qwen2 config.json `hf`; `require(key, allowed, why)` refuses
  what we don't compute."""
  kind = hf["model_type"]
  require("hidden_act", ("silu",), "its MLP gates with another activation than SwiGLU's SiLU")
  for key in ("num_local_experts", "num_experts"):
    require(key, (None,), "its MLP is a mixture of experts")
  if kind == "qwen2":
    require("use_sliding_window", (False,), "some of its layers attend within a sliding window only")
  require_full = [t for t in hf.get("layer_types") or () if t != "full_attention"]
  if require_full:
    raise errors.UserError(f"This {kind} checkpoint has layer_types with {require_full[0]!r}: some of its layers "
                           "attend within a sliding window only. bigmodel's model attends to the whole context, "
                           "so it does not load it.")
  rope = rope_parameters(hf)
  if rope["rope_type"] not in ROPE_TYPES:
    raise errors.UserError(f"This {kind} checkpoint scales its rotary positions with rope_type="
                           f"{rope['rope_type']!r}; bigmodel computes {', '.join(ROPE_TYPES)} only, so it does not "
                           "load it.")
  max_len = hf["max_position_embeddings"]
  window = hf.get("sliding_window") if kind == "mistral" else None
  # Within its window, sliding-window attention is full attention: the context is cut to the window so
  # that every sequence this model takes is computed as the checkpoint computes it (Mistral-7B-v0.1: 4,096).
  if window and window < max_len:
    max_len = window
  heads = hf["num_attention_heads"]
  bias = hf.get("attention_bias", False)
  return dict(name="llama", num_layers=hf["num_hidden_layers"], num_heads=heads,
              num_kv_heads=hf.get("num_key_value_heads") or heads, dim=hf["hidden_size"],
              head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, mlp_dim=hf["intermediate_size"],
              max_len=max_len, vocab_size=hf["vocab_size"], rope_theta=float(rope["rope_theta"]),
              rope_scaling=ROPE_TYPES[rope["rope_type"]], rope_factor=float(rope.get("factor", 1.0)),
              rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
              rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
              rope_original_max_len=int(rope.get("original_max_position_embeddings", 8192)),
              norm_epsilon=hf.get("rms_norm_eps", 1e-6), tie_embeddings=hf.get("tie_word_embeddings", False),
              qkv_bias=kind == "qwen2" or bias, out_bias=kind != "qwen2" and bias, mlp_bias=hf.get("mlp_bias", False))


def table(m):
  t = {"params/embed/embedding": same("model.embed_tokens.weight"), "params/ln_final/scale": same("model.norm.weight")}
  if not m.get("tie_embeddings") and m.get("pool", "none") == "none":
    t["params/lm_head/kernel"] = linear("lm_head.weight")
  for i in range(m["num_layers"]):
    h = f"model.layers.{i}"
    t |= {f"params/block{i}/ln_attn/scale": same(f"{h}.input_layernorm.weight"),
          f"params/block{i}/ln_mlp/scale": same(f"{h}.post_attention_layernorm.weight")}
    for ours, theirs, bias in (("attn/q", "self_attn.q_proj", m.get("qkv_bias")),
                               ("attn/k", "self_attn.k_proj", m.get("qkv_bias")),
                               ("attn/v", "self_attn.v_proj", m.get("qkv_bias")),
                               ("attn/out", "self_attn.o_proj", m.get("out_bias")),
                               ("mlp_gate", "mlp.gate_proj", m.get("mlp_bias")),
                               ("mlp_in", "mlp.up_proj", m.get("mlp_bias")),
                               ("mlp_out", "mlp.down_proj", m.get("mlp_bias"))):
      t[f"params/block{i}/{ours}/kernel"] = linear(f"{h}.{theirs}.weight")
      if bias:
        t[f"params/block{i}/{ours}/bias"] = same(f"{h}.{theirs}.bias")
  return t


def hf_config(model, num_labels=None):
  """LlamaForCausalLM's (or, with q/k/v biases only, Qwen2ForCausalLM's) config.json for our Llama."""
  del num_labels  # a language model only
  if model.get("pool", "none") != "none":
    raise errors.UserError("This Llama is a classifier (model.pool); bigmodel exports Llamas as language models only.")
  qwen2 = model["qkv_bias"] and not model["out_bias"]
  if model["out_bias"] and not model["qkv_bias"]:
    raise errors.UserError("This Llama has a bias on its attention output but none on q/k/v (model.out_bias without "
                           "model.qkv_bias): no Hugging Face class computes that.")
  if qwen2 and model["mlp_bias"]:
    raise errors.UserError("This Llama has q/k/v and MLP biases (model.qkv_bias, model.mlp_bias): Qwen2 has no MLP "
                           "biases and Llama biases its attention output too.")
  rope = {"rope_type": {v: k for k, v in ROPE_TYPES.items()}[model["rope_scaling"]],
          "rope_theta": model["rope_theta"]}
  if model["rope_scaling"] != "none":
    rope["factor"] = model["rope_factor"]
  if model["rope_scaling"] == "llama3":
    rope |= dict(low_freq_factor=model["rope_low_freq_factor"], high_freq_factor=model["rope_high_freq_factor"],
                 original_max_position_embeddings=model["rope_original_max_len"])
  heads = model["num_heads"]
  config = dict(architectures=["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
                model_type="qwen2" if qwen2 else "llama", num_hidden_layers=model["num_layers"],
                num_attention_heads=heads, num_key_value_heads=model["num_kv_heads"] or heads,
                hidden_size=model["dim"], head_dim=model["head_dim"] or model["dim"] // heads,
                intermediate_size=model["mlp_dim"] or llama.default_mlp_dim(model["dim"]),
                max_position_embeddings=model["max_len"], vocab_size=model["vocab_size"] or model["num_outputs"],
                rms_norm_eps=model["norm_epsilon"], hidden_act="silu", tie_word_embeddings=model["tie_embeddings"],
                rope_parameters=rope, bos_token_id=None, eos_token_id=None)
  if not qwen2:
    config |= dict(attention_bias=model["qkv_bias"], mlp_bias=model["mlp_bias"])
  return config
