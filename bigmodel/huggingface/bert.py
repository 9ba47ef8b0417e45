"""BERT (`BertModel`, `BertForMaskedLM`, `BertForSequenceClassification`, and `BertForPreTraining`'s files)
<-> models/bert.py's BERT: post-LayerNorm, token types, exact GELU, LayerNorm epsilon 1e-12, the pooler
and the masked-LM head (its decoder tied to the word embeddings)."""
import dataclasses

from bigmodel import errors
from bigmodel.huggingface.tensors import dense, norm, same
from bigmodel.models import bert

MODEL_TYPE = "bert"
ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")
MODEL = bert.BERT
PREFIX = "bert."  # the task models'; a BertModel saves without it


def model_config(hf, require):
  """Our `model` section for BERT config.json `hf`; `require(key, allowed, why)` refuses what we don't compute."""
  require("hidden_act", ("gelu",), "its MLP uses another activation")
  require("position_embedding_type", ("absolute",), "its positions are relative, not learned absolute ones")
  require("is_decoder", (False,), "it is a causal decoder, not a bidirectional encoder")
  require("add_cross_attention", (False,), "its layers attend to an encoder's output too")
  return dict(name="bert", num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
              dim=hf["hidden_size"], mlp_dim=hf["intermediate_size"], max_len=hf["max_position_embeddings"],
              vocab_size=hf["vocab_size"], type_vocab_size=hf.get("type_vocab_size", 2),
              ln_epsilon=hf.get("layer_norm_eps", 1e-12))


def table(m):
  e = "bert.embeddings"
  t = {"params/embed/embedding": same(f"{e}.word_embeddings.weight"),
       "params/pos_embed": same(f"{e}.position_embeddings.weight"),
       "params/type_embed": same(f"{e}.token_type_embeddings.weight"), **norm("ln_embed", f"{e}.LayerNorm"),
       **dense("pooler", "bert.pooler.dense", head="pooler"), **dense("head", "classifier", head="classifier"),
       **dense("mlm_dense", "cls.predictions.transform.dense", head="mlm"),
       "params/mlm_bias": same("cls.predictions.bias", head="mlm")}
  t |= {k: dataclasses.replace(v, head="mlm") for k, v in norm("ln_mlm", "cls.predictions.transform.LayerNorm").items()}
  for i in range(m["num_layers"]):
    h = f"bert.encoder.layer.{i}"
    for x in ("query", "key", "value"):
      t |= dense(f"layer{i}/attn/{x}", f"{h}.attention.self.{x}")
    t |= (dense(f"layer{i}/attn/out", f"{h}.attention.output.dense") |
          norm(f"layer{i}/ln_attn", f"{h}.attention.output.LayerNorm") |
          dense(f"layer{i}/mlp_in", f"{h}.intermediate.dense") | dense(f"layer{i}/mlp_out", f"{h}.output.dense") |
          norm(f"layer{i}/ln_mlp", f"{h}.output.LayerNorm"))
  return t


def hf_config(model, num_labels=None):
  """BertForMaskedLM's or BertForSequenceClassification's config.json for our BERT."""
  if model.get("pool") == "mean":
    raise errors.UserError("This BERT pools the mean of its hidden states (model.pool='mean'); Hugging Face's "
                           "BertForSequenceClassification reads the pooled [CLS] token. Train with model.pool=cls "
                           "for an exportable classifier.")
  classifier = model.get("pool", "none") == "cls"
  return dict(architectures=["BertForSequenceClassification" if classifier else "BertForMaskedLM"],
              model_type="bert", num_hidden_layers=model["num_layers"], num_attention_heads=model["num_heads"],
              hidden_size=model["dim"], intermediate_size=model["mlp_dim"], max_position_embeddings=model["max_len"],
              vocab_size=model["vocab_size"] or model["num_outputs"], type_vocab_size=model["type_vocab_size"],
              layer_norm_eps=model["ln_epsilon"], hidden_act="gelu", tie_word_embeddings=True,
              **({"num_labels": num_labels or model["num_outputs"]} if classifier else {}))
