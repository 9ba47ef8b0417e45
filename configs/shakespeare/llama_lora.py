"""A Llama-shaped checkpoint (SmolLM2-135M by default) fine-tuned with LoRA on Shakespeare's plays, with
its own tokenizer: the workflow "take a current open model, fine-tune it on my data, serve it".

The model, its sizes and its byte-level BPE come from the checkpoint (init.hf): any LlamaForCausalLM,
MistralForCausalLM or Qwen2ForCausalLM (TinyLlama, Llama 3.2, Qwen2.5, ... : set init.hf). Rank-8
factors on every attention and MLP kernel train; the checkpoint's weights stay fixed.
Run:    python -m bigmodel.train --config=configs/shakespeare/llama_lora.py --workdir=runs/shakespeare_llama
        python -m bigmodel.generate --workdir=runs/shakespeare_llama --prompt="ROMEO:" --greedy
        python -m bigmodel.export --workdir=runs/shakespeare_llama --out=runs/shakespeare_llama_hf --format=hf
        python -m bigmodel.export --workdir=runs/shakespeare_llama --out=runs/shakespeare_llama_served
        python -m bigmodel.serve --export=runs/shakespeare_llama_served
Expect: not measured: this machine cannot download SmolLM2. The test suite runs these commands on tiny
        Llama, Mistral and Qwen2 checkpoints that transformers makes (tests/test_llama.py). 500 steps of
        8 x 256 tokens.
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.init = dict(hf="HuggingFaceTB/SmolLM2-135M")
  c.data = dict(name="shakespeare", seq_len=256, batch_size=8, eval_batch_size=32, eval_split="val")
  c.model = dict(max_len=256)  # the KV cache's length when it generates and serves (the checkpoint's is 8,192)
  c.loss = "lm_xent"
  c.optimizer = dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=50,
                     weight_decay=0.0, grad_clip_norm=1.0, lora=dict(rank=8, alpha=16.0))
  c.total_steps = 500
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 250
  return config_lib.resolve(c)
