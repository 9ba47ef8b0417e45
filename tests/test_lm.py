"""Language models: causal masking, KV cache, sampling, masked LM, training, generation, fine-tuning."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel import (config as config_lib, export, generate, kv_cache, models, sampling, starting_weights,
                      workdir as workdir_lib)
from bigmodel.data import mlm
from bigmodel.train import train_and_evaluate
from conftest import run_cli, tiny_config, make_trainer

TINY = dict(num_layers=2, num_heads=2, dim=32, max_len=16)


def tiny_gpt(**kw):
  return models.build({"name": "gpt", "num_outputs": 50, **TINY, **kw})


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_future_tokens_do_not_change_past_logits(positions):
  model = tiny_gpt(positions=positions)
  x = jax.random.randint(jax.random.key(0), (2, 12), 0, 50)
  params = jax.jit(model.init)(jax.random.key(1), x)["params"]
  changed = x.at[:, 7:].set((x[:, 7:] + 1) % 50)
  apply = jax.jit(model.apply)  # one compile, not one per eager op
  a, b = apply({"params": params}, x), apply({"params": params}, changed)
  np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-5)
  assert not np.allclose(a[:, 7:], b[:, 7:], atol=1e-3)
  # The BERT-style encoder is bidirectional: the same change reaches earlier positions.
  bert = tiny_gpt(positions=positions, causal=False)
  params = jax.jit(bert.init)(jax.random.key(1), x)["params"]
  apply = jax.jit(bert.apply)
  assert not np.allclose(apply({"params": params}, x)[:, :7], apply({"params": params}, changed)[:, :7], atol=1e-3)


def test_padding_is_invisible_to_the_real_tokens_and_the_mean_pool():
  model = tiny_gpt(causal=False, pool="mean")
  x = jnp.array([[5, 6, 7, -1, -1, -1], [5, 6, 7, 8, 9, 10]])
  params = jax.jit(model.init)(jax.random.key(1), x)["params"]
  apply = jax.jit(model.apply)  # one compile per shape: eager, each of a GPT's small ops compiled alone (~3x slower)
  short = apply({"params": params}, x[:1, :3])
  np.testing.assert_allclose(apply({"params": params}, x)[:1], short, atol=1e-5)


@pytest.mark.parametrize("positions", [  # learned: GPT-2's, whose cached generation test_huggingface checks too
    pytest.param("learned", marks=pytest.mark.slow), "rope"])
def test_kv_cache_decoding_gives_the_same_tokens_as_recomputing_the_context(positions):
  model = tiny_gpt(positions=positions)
  prompt = jax.random.randint(jax.random.key(0), (2, 5), 0, 50)
  params = model.init(jax.random.key(1), prompt)["params"]
  # Scale up the weights so the random model has clear preferences (no near-ties in argmax).
  params = jax.tree.map(lambda p: p * 8, params)
  kw = dict(max_new_tokens=20, temperature=0.0)  # 5 + 20 > max_len 16: the window slides too
  cached = generate.generate(model, params, prompt, use_cache=True, **kw)
  uncached = generate.generate(model, params, prompt, use_cache=False, **kw)
  assert cached.shape == (2, 25)
  np.testing.assert_array_equal(cached, uncached)
  assert len(np.unique(cached[:, 5:])) > 3  # not one token repeated: the check has teeth


@pytest.mark.parametrize("name, scan_layers, kv_heads", [("gpt", False, 2), ("gpt", True, 2), ("llama", False, 1)])
def test_a_model_that_decodes_says_so_and_its_cache_has_the_layout_of_kv_cache_py(name, scan_layers, kv_heads):
  """The contract decoding, export and artifact rely on: the class declares it; the cache holds INDEX and, per
  layer, keys and values of batch x positions x heads x head size (a layer axis first when scanned)."""
  model = models.build({"name": name, "num_outputs": 50, **TINY, "scan_layers": scan_layers,
                        **({"num_kv_heads": kv_heads} if name == "llama" else {})})
  assert kv_cache.decodes(model) and not kv_cache.decodes(models.build({"name": "lstm_lm", "num_outputs": 50}))
  cache = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((3, 1), jnp.int32), decode=True))[
      kv_cache.COLLECTION]
  arrays, _ = kv_cache.flatten(cache)
  assert cache[kv_cache.INDEX].shape == () and len(arrays) == (2 if scan_layers else 2 * TINY["num_layers"])
  layers = (TINY["num_layers"],) if scan_layers else ()
  head = TINY["dim"] // TINY["num_heads"]
  assert all(a.shape == (*layers, 3, TINY["max_len"], kv_heads, head) for a in arrays), [a.shape for a in arrays]
  assert kv_cache.with_positions(arrays[0].shape, 5)[kv_cache.POSITIONS_AXIS] == 5


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_sampled_token_i_is_drawn_with_key_i_from_the_logits_of_the_window_before_it(use_cache):
  # The reference: the model run afresh on the last max_len tokens for every token, and
  # sampling.draw's step i. Past the context (5 + 20 > max_len 16) the cache path re-reads the window.
  model = tiny_gpt(positions="rope")
  prompt = jax.random.randint(jax.random.key(0), (1, 5), 0, 50)
  params = jax.tree.map(lambda p: p * 4, model.init(jax.random.key(1), prompt)["params"])
  got = generate.generate(model, params, prompt, 20, temperature=0.9, top_k=20, seed=7, use_cache=use_cache)[0]
  want, forward = list(np.asarray(prompt[0])), jax.jit(lambda ids_1xL: model.apply({"params": params}, ids_1xL))
  for i in range(20):
    logits_1xV = forward(jnp.array([want[-TINY["max_len"]:]]))[:, -1]
    want.append(int(sampling.draw(logits_1xV, jnp.array([7], jnp.uint32), jnp.array([i]), jnp.array([0.9]),
                                  jnp.array([20]), jnp.array([1.0]))[0]))
  np.testing.assert_array_equal(got, want)


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy():
  model = tiny_gpt()
  prompt = jnp.zeros((3, 2), jnp.int32)
  params = model.init(jax.random.key(1), prompt)["params"]
  sample = lambda **kw: generate.generate(model, params, prompt, 10, **kw)
  np.testing.assert_array_equal(sample(seed=3), sample(seed=3))
  assert not np.array_equal(sample(seed=3), sample(seed=4))
  greedy = sample(temperature=0.0)
  np.testing.assert_array_equal(sample(seed=5, top_k=1), greedy)
  np.testing.assert_array_equal(sample(seed=5, top_p=1e-6), greedy)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_top_p_keeps_the_fewest_tokens_that_reach_p():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  draw = lambda i, top_k, top_p: int(sampling.sample(logits, jax.random.key(i)[None], jnp.ones(1), jnp.array([top_k]),
                                                      jnp.array([top_p]))[0])
  assert {draw(i, 0, 0.7) for i in range(200)} == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3
  assert {draw(i, 3, 1.0) for i in range(200)} == {0, 1, 2}


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_a_rows_draw_does_not_depend_on_whether_other_rows_cut():
  # sampling skips the cut when no row asks for one: a row's draws are the same either way.
  logits = jnp.log(jnp.array([[0.4, 0.3, 0.2, 0.1]] * 2))
  draws = lambda i, top_k: sampling.sample(logits, jnp.stack([jax.random.key(i)] * 2), jnp.ones(2), jnp.array(top_k),
                                           jnp.ones(2)).tolist()
  alone = [draws(i, [0, 0]) for i in range(100)]
  beside = [draws(i, [0, 2]) for i in range(100)]
  assert [a[0] for a in alone] == [b[0] for b in beside]
  assert {a[0] for a in alone} == {0, 1, 2, 3} and {b[1] for b in beside} == {0, 1}  # the second row cuts


def test_masked_lm_masks_the_bert_rates_and_targets_only_masked_positions():
  tokens = np.random.default_rng(0).integers(0, 100, (200, 128)).astype(np.int32)
  tokens[:, 100:] = -1  # padding is never chosen
  out = mlm.mask_batch({"x": tokens, "y": tokens}, np.random.default_rng(1), rate=0.15, vocab_size=100, mask_id=100)
  chosen = out["y"] >= 0
  assert abs(chosen[:, :100].mean() - 0.15) < 0.01 and not chosen[:, 100:].any()
  np.testing.assert_array_equal(out["y"][chosen], tokens[chosen])
  masked = out["x"][chosen] == 100
  kept = out["x"][chosen] == tokens[chosen]
  assert abs(masked.mean() - 0.8) < 0.02 and 0.08 < kept.mean() < 0.12  # 10 % kept (+ chance in random)
  np.testing.assert_array_equal(out["x"][~chosen], tokens[~chosen])


def lm_config(data_dir, **kw):
  c = tiny_config(data_dir, total_steps=80, eval_every=80, checkpoint_every=80, log_every=20)
  c.data = dict(name="shakespeare", tokenizer="char", seq_len=32, batch_size=16, eval_batch_size=256,
                eval_split="val", data_dir=data_dir)
  c.model = dict(name="gpt", num_layers=2, num_heads=2, dim=64, max_len=32)
  c.loss = "lm_xent"
  c.optimizer = dict(name="adamw", learning_rate=3e-3)
  for k, v in kw.items():
    section, _, name = k.rpartition(".")
    (c[section] if section else c)[name] = v
  return c


def test_language_model_windows_gathered_on_the_device_equal_the_hosts(data_dir):
  ex = make_trainer(lm_config(data_dir))
  assert ex.feed.device_data is not None  # 4.3 M characters: well under data.on_device_mb
  idx = np.array([0, 5, 123_456, len(ex.feed.device_data) - 1])
  host = ex.exp.dataset.splits["train"].gather(idx)
  device = jax.jit(lambda split, i: split.gather(i))(ex.feed.device_data, idx)
  for k in ("x", "y"):
    np.testing.assert_array_equal(device[k], host[k])
  np.testing.assert_array_equal(host["y"][:, :-1], host["x"][:, 1:])


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_gpt_trains_on_shakespeare_saves_its_tokenizer_and_generates_from_the_cli(data_dir, tmp_path):
  workdir = str(tmp_path / "lm")
  final = train_and_evaluate(lm_config(data_dir), workdir)
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train_loss = [r["loss"] for r in records if r["split"] == "train"]
  assert train_loss[-1] < train_loss[0] - 0.5, train_loss
  assert final["loss"] < np.log(76) - 1.2 and final["perplexity"] == pytest.approx(np.exp(final["loss"]))
  # Bits per byte: nats per token / ln 2 / bytes per token (~1 byte per character here).
  assert final["bits_per_byte"] == pytest.approx(final["loss"] / np.log(2), rel=0.02)
  assert "tokens_per_sec" in records[0] and os.path.exists(os.path.join(workdir, "tokenizer.json"))
  args = ("bigmodel.generate", f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=40", "--top_k=10",
          "--temperature=0.8", "--seed=7")
  a, b = run_cli(*args).stdout, run_cli(*args).stdout
  assert a == b and a.startswith("ROMEO:") and len(a) >= 40


@pytest.mark.parametrize("model", [dict(name="lstm_lm", dim=32, hidden=64, num_layers=1),
                                   dict(name="gpt", num_layers=1, num_heads=2, dim=32, max_len=32,
                                        positions="rope", tie_embeddings=False, dropout=0.1)])
@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_other_language_models_lower_the_loss_on_the_users_text_files(data_dir, tmp_path, model):
  lines = [f"{n} green bottles hanging on the wall, and if one green bottle should accidentally fall\n"
           for n in ("ten", "nine", "eight", "seven", "six", "five", "four", "three", "two", "one")]
  for i in range(3):
    (tmp_path / f"song{i}.txt").write_text("".join(lines * 10))
  c = lm_config(data_dir, total_steps=60, eval_every=60, checkpoint_every=60, log_every=10,
                **{"data.name": "text_files", "data.files": (str(tmp_path / "song*.txt"),)})
  c.model = model
  final = train_and_evaluate(c, str(tmp_path / "run"))
  loss = [json.loads(line)["loss"] for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert loss[-2] < loss[0] - 0.5 and final["loss"] < 2.0, (loss, final)  # last train read vs first
  out = generate.generate(*generate.load(str(tmp_path / "run"))[:2], np.zeros((1, 3), np.int32), 5)
  assert out.shape == (1, 8)


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
def test_bert_masked_lm_trains_with_a_mask_token_beyond_the_vocabulary(data_dir, tmp_path):
  c = lm_config(data_dir, **{"data.mlm_mask_rate": 0.15})
  c.model = dict(name="bert_tiny", num_layers=1, max_len=32)
  ex = make_trainer(c)
  assert ex.exp.model.vocab_size == ex.exp.dataset.tokenizer.vocab_size + 1
  final = train_and_evaluate(c, str(tmp_path))
  assert final["accuracy"] > 0.15 and final["tokens"] < 0.2 * 32 * len(ex.exp.dataset.splits["val"]), final
  # It cannot continue text: generate and export say so, instead of failing on shapes.
  proc = run_cli("bigmodel.generate", f"--workdir={tmp_path}", "--prompt=ROMEO:", check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
  assert "is a masked LM" in proc.stderr and "task='language_model'" in proc.stderr, proc.stderr
  with pytest.raises(ValueError, match="is a masked LM: it predicts masked tokens from both sides and cannot generate text"):
    export.export(str(tmp_path), str(tmp_path / "exported"))


@pytest.mark.slow  # the fast tier (-m 'not slow') leaves it out: README, Tests
@pytest.mark.needs("fine_foods")
def test_a_pretrained_lm_loads_into_a_classifier_with_a_new_head(data_dir, tmp_path):
  pretrain = str(tmp_path / "lm")
  lm = lm_config(data_dir, total_steps=30, **{"data.name": "fine_foods_text", "data.tokenizer": "byte"})
  train_and_evaluate(lm, pretrain)
  lm_params, _, _ = workdir_lib.read_weights(pretrain, None)
  c = lm_config(data_dir, total_steps=30, **{"data.name": "fine_foods", "data.tokenizer": pretrain,
                                             "data.eval_split": "test"})
  c.loss = "softmax_xent"
  c.model = dict(lm.model, pool="mean")
  c.init = dict(checkpoint=pretrain)
  c.optimizer.freeze = ("^embed/", "^pos_embed")
  ex = make_trainer(c)
  params, _, message = starting_weights.load(config_lib.resolve(c).init, None, ex.state.params, {}, None)
  assert "fresh: head/bias, head/kernel" in message
  np.testing.assert_array_equal(params["block1"]["attn"]["qkv"]["kernel"], lm_params["block1"]["attn"]["qkv"]["kernel"])
  assert params["head"]["kernel"].shape == (64, 2)
  final = train_and_evaluate(c, str(tmp_path / "clf"))
  assert 0.5 < final["accuracy"] and np.array(final["confusion_matrix"]).shape == (2, 2)
  tuned, _, _ = workdir_lib.read_weights(str(tmp_path / "clf"), None)
  np.testing.assert_array_equal(tuned["embed"]["embedding"], lm_params["embed"]["embedding"])  # frozen
  # A model of another width cannot take these weights: the error names the parameter.
  c.model.dim = 32
  with pytest.raises(ValueError, match=r"block0/attn/qkv/kernel: checkpoint has \(64, 192\)"):
    train_and_evaluate(c, str(tmp_path / "wrong"))


@pytest.mark.slow  # a training run (~10 s of the fast tier); the full suite runs it
def test_text_csv_classification_reads_the_users_files(data_dir, tmp_path):
  rows = [("what a great film", "pos"), ("awful and boring", "neg")] * 40
  for split in ("train", "test"):
    with open(tmp_path / f"{split}.jsonl", "w") as f:
      for text, label in rows:
        f.write(json.dumps({"review": text, "sentiment": label}) + "\n")
  c = lm_config(data_dir, total_steps=40, **{"data.name": "text_csv", "data.tokenizer": "byte",
                                              "data.eval_split": "test", "data.seq_len": 24})
  c.data.files = (str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl"))
  c.data.text_key, c.data.label_key = "review", "sentiment"
  c.loss = "softmax_xent"
  c.model = dict(name="gpt", num_layers=1, num_heads=2, dim=32, max_len=24, pool="last")
  assert train_and_evaluate(c, str(tmp_path / "run"))["accuracy"] == 1.0


def test_lm_loss_with_a_non_corpus_dataset_is_refused(data_dir):
  c = tiny_config(data_dir)
  c.loss = "lm_xent"
  with pytest.raises(ValueError, match=r"task='language_model' \(loss='lm_xent'\) needs a corpus dataset; "
                                       r"data.name='mnist1d' is a labelled dataset"):
    make_trainer(c)
