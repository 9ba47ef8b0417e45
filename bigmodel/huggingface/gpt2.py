"""GPT-2 (`GPT2LMHeadModel`, `GPT2Model`) <-> models/gpt.py's GPT: learned positions, tied embeddings,
tanh GELU, LayerNorm epsilon 1e-5. GPT-2's Conv1D stores (in, out), as flax does; c_attn's columns are
q | k | v, as our fused qkv kernel's."""
from bigmodel import errors
from bigmodel.huggingface.tensors import dense, norm, same
from bigmodel.models import gpt

MODEL_TYPE = "gpt2"
ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
MODEL = gpt.GPT
PREFIX = "transformer."  # GPT2LMHeadModel's; the base GPT2Model (and the gpt2 hub repo's file) has none


def model_config(hf, require):
  """Our `model` section for GPT-2 config.json `hf`; `require(key, allowed, why)` refuses what we don't compute."""
  require("activation_function", ("gelu_new", "gelu_pytorch_tanh"), "its MLP uses another activation")
  require("scale_attn_weights", (True,), "its attention logits are not divided by the square root of the head size")
  require("scale_attn_by_inverse_layer_idx", (False,), "layer i divides its attention logits by i + 1 as well")
  require("reorder_and_upcast_attn", (False,), "it computes attention in another order and precision (float32 logits)")
  require("add_cross_attention", (False,), "its blocks attend to an encoder's output too")
  require("tie_word_embeddings", (True,), "its lm_head is a separate matrix")
  return dict(name="gpt", num_layers=hf["n_layer"], num_heads=hf["n_head"], dim=hf["n_embd"],
              mlp_dim=hf.get("n_inner") or 4 * hf["n_embd"], max_len=hf["n_positions"], vocab_size=hf["vocab_size"],
              positions="learned", tie_embeddings=True, causal=True, ln_epsilon=hf.get("layer_norm_epsilon", 1e-5))


def table(m):
  t = {"params/embed/embedding": same("transformer.wte.weight"), "params/pos_embed": same("transformer.wpe.weight"),
       **norm("ln_final", "transformer.ln_f")}
  for i in range(m["num_layers"]):
    h = f"transformer.h.{i}"
    t |= norm(f"block{i}/ln_attn", f"{h}.ln_1") | norm(f"block{i}/ln_mlp", f"{h}.ln_2")
    for ours, theirs in (("attn/qkv", "attn.c_attn"), ("attn/out", "attn.c_proj"), ("mlp_in", "mlp.c_fc"),
                         ("mlp_out", "mlp.c_proj")):
      t |= dense(f"block{i}/{ours}", f"{h}.{theirs}", transposed=False)
  return t


def hf_config(model, num_labels=None):
  """GPT2LMHeadModel's config.json for our GPT, or a UserError saying why none computes what it does."""
  del num_labels  # a language model only
  reasons = [why for bad, why in (
      (not model.get("causal", True), "it is the pre-LayerNorm bidirectional encoder (bert_tiny ...), which no "
                                      "Hugging Face class computes; train model.name=bert for an exportable BERT"),
      (model.get("positions") == "rope", "it uses rotary positions; GPT-2 learns absolute ones"),
      (not model.get("tie_embeddings", True), "its lm_head is separate from the token embedding; GPT-2 ties them"),
      (model.get("pool", "none") != "none", "it is a classifier; GPT-2 exports as a language model only"),
      (not model.get("use_bias", True), "it has no biases (model.use_bias=false); GPT-2's layers have them"))
      if bad]
  if reasons:
    raise errors.UserError(f"This GPT has no Hugging Face GPT-2 equivalent: {reasons[0]}.")
  return dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", n_layer=model["num_layers"],
              n_head=model["num_heads"], n_embd=model["dim"], n_inner=model["mlp_dim"] or 4 * model["dim"],
              n_positions=model["max_len"], vocab_size=model["vocab_size"] or model["num_outputs"],
              layer_norm_epsilon=model["ln_epsilon"], activation_function="gelu_new", tie_word_embeddings=True,
              bos_token_id=None, eos_token_id=None)
