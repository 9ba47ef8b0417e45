"""GPT-2 small (124 M) on OpenWebText, nanoGPT's and llm.c's recipe: context 1,024, ~0.5 M-token batches.

Data (needs a network once, ~54 GB of text, ~9 B GPT-2 tokens, ~17 GB of uint16 shards on disk):
        python -c "import datasets; datasets.load_dataset('openwebtext', num_proc=8).to_json('owt.jsonl')"  # or
        #  any .jsonl/.parquet with a "text" field, e.g. FineWeb's parquet files
        python -m bigmodel.prepare --input=owt.jsonl --text_key=text --tokenizer=gpt2 --out=corpora/owt \
            --val_every=200   # 0.5 % of the documents held out, as nanoGPT does
Run:    python -m bigmodel.train --config=configs/openwebtext/gpt2_small.py --workdir=runs/owt_gpt2 \
            --config.data.path=corpora/owt
        (on several hosts: python -m bigmodel.launch ... or --config.distributed=True; each host reads its own rows)
Batch:  480 sequences x 1,024 tokens = 491,520 tokens a step (nanoGPT: 12 x 1,024 x 40 accumulation steps),
        in micro_batches=5 parts: 12 sequences per device per part on 8 devices.
Pre-flight (8 x 80 GB devices, data-parallel): 124 M parameters (with GPT-2's tied 50,257 x 768 embedding),
        params 0.46 GB and AdamW state 0.93 GB per device; ~4.2e14 FLOPs a step (nanoGPT's 6N + 12 L H Q T
        per token x 491,520 tokens). `python -m benchmarks.fits --model=gpt_small --devices=8 --seq_len=1024
        --batch_per_device=12 --vocab=50304 --remat=none` (FSDP over 8, measured here 2026-12-05): params 59.4 MB,
        AdamW 118.7 MB, XLA CPU temporaries 34.5 GB per device for one micro-batch of 12 x 1,024 (an upper
        bound: the CPU's attention keeps every head's scores): fits 80 GB.
Expect: validation loss ~2.85 after ~300 k steps (~150 B tokens), as nanoGPT's published run on 8 x A100 40 GB
        (about 4 days; llm.c reaches GPT-2's 124 M HellaSwag in 10 B tokens on FineWeb). Not run here: this
        machine has no accelerator and no network; the config is trained two steps on a small prepared
        corpus by tests/test_corpus.py.
"""
import ml_collections

from bigmodel import config as config_lib


def get_config():
  c = ml_collections.ConfigDict()
  c.data = dict(name="tokens", path="corpora/owt", tokenizer="", seq_len=1024, batch_size=480,
                eval_batch_size=96, eval_split="val", eval_examples=-1)  # eval: 8,192 fixed windows
  c.model = dict(name="gpt_small", dropout=0.0, dtype="bfloat16")
  c.loss = "lm_xent"
  c.micro_batches = 5
  # nanoGPT's train_gpt2.py: AdamW (0.9, 0.95), lr 6e-4 to 6e-5, 2,000 warmup steps, decay 0.1, clip 1.0.
  c.optimizer = dict(name="adamw", learning_rate=6e-4, b1=0.9, b2=0.95, schedule="warmup_cosine",
                     warmup_steps=2000, min_lr_ratio=0.1, weight_decay=0.1, grad_clip_norm=1.0)
  c.total_steps = 300_000
  c.log_every = 100
  c.eval_every = 2000
  c.checkpoint_every = 2000
  return config_lib.resolve(c)
