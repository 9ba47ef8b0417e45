"""Review sentiment as a chat task: SmolLM2-135M-Instruct fully fine-tuned (every weight trains), the LoRA
recipe's data, loss and schedule (configs/fine_foods/smollm2_chat_lora.py) otherwise.

Full fine-tuning moves every weight, so it takes a learning rate 20x lower than LoRA's factors (5e-5, a common
choice for full supervised fine-tuning of a model this size; not tuned here) and keeps Adam's two moments for all
137 M parameters (1.1 GB).
Run:    python -m experiments.instruction_tuning.data --out=runs/fine_foods_chat   # the reviews as chat .jsonl
        python -m bigmodel.train --config=configs/fine_foods/smollm2_chat_full.py --workdir=runs/fine_foods_chat_full
Expect: seed 0, 100 training reviews, the first 100 test reviews of <= 40 words: greedy-answer accuracy 84 %,
        answer-token eval loss 0.186 (LoRA: 84 %, 0.160); seeds 0, 1, 2: 84, 76, 72 % (77.3 ± 15.2; LoRA 77.0 ±
        15.5). 50 steps in 3 min 43 s (seed 0) on a 2-core Intel Xeon beside a test (2026-12-05):
        experiments/instruction_tuning/results.md (python -m experiments.instruction_tuning.run --full_budgets=100).
"""
from configs.fine_foods import smollm2_chat_lora


def get_config():
  c = smollm2_chat_lora.get_config()
  c.optimizer.lora.rank = 0  # no factors: every weight trains
  c.optimizer.learning_rate = 5e-5
  return c
