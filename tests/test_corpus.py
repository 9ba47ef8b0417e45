"""Corpora larger than memory: `python -m bigmodel.prepare` writes token shards, `data.name=tokens` trains
from them. Killed preparations and killed trainings end as uninterrupted ones; damaged shards and a
tokenizer that is not the corpus's are named; the window order needs no permutation of the corpus."""
import glob
import gzip
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bigmodel import errors, tokenizers, workdir as workdir_lib
from bigmodel.data import pipeline, text, tokens
from bigmodel.prepare import prepare
from conftest import ROOT, XLA_TEST_FLAGS, run_cli

sys.path.insert(0, os.path.dirname(__file__))
from hf_checkpoints import gpt2_dir  # noqa: E402,F401 (fixture)

WORDS = "the king and queen of a far land with gold and silver rivers under the hills".split()


def write_docs(path, n=200, seed=0, words=40):
  """n documents of `words` words each, one JSON record a line."""
  rng = np.random.default_rng(seed)
  docs = [" ".join(rng.choice(WORDS, words)) + f" ({i})" for i in range(n)]
  with open(path, "w", encoding="utf-8") as f:
    for d in docs:
      f.write(json.dumps({"text": d}) + "\n")
  return docs


def shard_bytes(out):
  return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(os.path.join(out, "*.bin")))}


def test_each_epoch_of_the_window_order_is_a_permutation_and_epochs_differ():
  for n in (1, 2, 3, 5, 17, 1000, 4099, 65537):
    got = tokens.permuted(np.arange(n), n, seed=7, epoch=0)
    np.testing.assert_array_equal(np.sort(got), np.arange(n))
  a, b = (tokens.permuted(np.arange(1000), 1000, seed=7, epoch=e) for e in (0, 1))
  assert (a != b).mean() > 0.9 and (a != np.arange(1000)).mean() > 0.9


def test_the_window_order_is_a_function_of_seed_and_batch_alone_and_covers_every_window_per_epoch():
  n, batch = 1000, 8
  order = tokens.WindowOrder([n], [1.0], batch, seed=3)
  epoch = np.concatenate([order[b] for b in range(n // batch)])
  np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
  again = tokens.WindowOrder([n], [1.0], batch, seed=3)
  np.testing.assert_array_equal(again[123_456_789], order[123_456_789])  # no state: any batch, any time
  assert not np.array_equal(tokens.WindowOrder([n], [1.0], batch, seed=4)[5], order[5])


def test_a_mixture_gives_each_source_its_weight_of_every_batch():
  order = tokens.WindowOrder([100, 50], [3.0, 1.0], 8, seed=0)
  for b in (0, 1, 99):
    idx = order[b]
    assert (idx < 100).sum() == 6 and (idx >= 100).sum() == 2
  windows = [text.Windows(np.arange(1000) + 10_000 * s, 4, 1) for s in range(2)]
  sources = tokens.Sources(windows, [3.0, 1.0])
  assert len(sources) == 2 * 996
  got = sources.gather(np.array([999, 3, 995]))  # source 1's window 3, source 0's 3 and 995 (its last)
  np.testing.assert_array_equal(got["x"][:, 0], [10_003, 3, 995])


def test_eval_takes_a_fixed_spread_subset_of_a_big_corpus_split_and_all_with_0():
  n = 3 * pipeline.EVAL_WINDOWS + 5
  some = pipeline.eval_indices(n, -1, corpus=True)
  assert len(some) == pipeline.EVAL_WINDOWS and some[0] == 0 and some[-1] > n - 5
  assert len(pipeline.eval_indices(n, 0, corpus=True)) == n
  assert len(pipeline.eval_indices(n, -1, corpus=False)) == n  # labelled sets are walked whole as before
  np.testing.assert_array_equal(pipeline.eval_indices(n, 10, corpus=True), np.arange(10))


@pytest.fixture(scope="module")
def docs_file(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("docs") / "docs.jsonl")
  return path, write_docs(path)


@pytest.fixture(scope="module")
def prepared(docs_file, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("prepared"))
  prepare([docs_file[0]], "byte", out, workers=2, shard_tokens=5000, val_every=10, task_mb=0.002, progress=False)
  return out


def test_prepared_shards_hold_the_documents_in_order_each_ended_by_the_separator(docs_file, prepared):
  _, docs = docs_file
  manifest = tokens.read_manifest(prepared)
  assert manifest["dtype"] == "uint16" and len(manifest["shards"]["train"]) > 3  # cut across documents
  split = tokens.Prepared.open(prepared)
  for name, keep in (("train", lambda k: k % 10 != 9), ("val", lambda k: k % 10 == 9)):
    ids = split.tokens(name)[np.arange(len(split.tokens(name)))]
    want = "".join(d + "\n\n" for k, d in enumerate(docs) if keep(k))
    assert tokenizers.ByteTokenizer().decode(ids) == want
    assert manifest["documents"][name] == sum(map(keep, range(len(docs))))
  assert tokenizers.load(prepared).kind == "byte"


def test_jsonl_gz_gives_the_same_shards_and_other_workers_counts_too(docs_file, prepared, tmp_path):
  with open(docs_file[0], "rb") as f, gzip.open(tmp_path / "docs.jsonl.gz", "wb") as g:
    g.write(f.read())
  out = str(tmp_path / "gz")
  prepare([str(tmp_path / "docs.jsonl.gz")], "byte", out, workers=1, shard_tokens=5000, task_mb=0.01, progress=False)
  assert shard_bytes(out) == shard_bytes(prepared)
  pq = pytest.importorskip("pyarrow.parquet")
  import pyarrow as pa
  pq.write_table(pa.table({"text": docs_file[1]}), str(tmp_path / "docs.parquet"), row_group_size=37)
  prepare([str(tmp_path / "docs.parquet")], "byte", str(tmp_path / "pq"), workers=1, shard_tokens=5000,
          progress=False)
  assert shard_bytes(str(tmp_path / "pq")) == shard_bytes(prepared)


def test_text_files_are_documents_cut_where_no_token_spans_and_char_and_bpe_learn_from_them(tmp_path):
  plays = tmp_path / "plays"
  plays.mkdir()
  texts = [f"KING:\nNo, my lord {i}.\n  Nay, stay.\n\n" * 300 for i in range(20)]
  for i, t in enumerate(texts):
    (plays / f"{i:02d}.txt").write_text(t)
  for name in ("char", "bpe"):
    out = str(tmp_path / name)
    prepare([str(plays / "*.txt")], name, out, workers=1, vocab_size=300, piece_mb=0.002, separator="|",
            progress=False)
    tok, prepared = tokenizers.load(out), tokens.Prepared.open(out)
    split = {s: tok.decode(prepared.tokens(s)[np.arange(len(prepared.tokens(s)))]).split("|")[:-1]
             for s in ("train", "val")}
    assert len(split["train"]) > 3 * len(texts) * 0.9  # each file in several pieces, each piece a document
    docs = [(split["val"] if k % 10 == 9 else split["train"]).pop(0) for k in range(sum(map(len, split.values())))]
    assert "".join(docs) == "".join(texts)
    assert all(len(d) <= 0.002 * 2**20 and d[0] in "KN" for d in docs)  # cut before a line that starts with a letter


def test_a_hugging_face_tokenizer_ends_documents_with_its_end_of_text_id(gpt2_dir, docs_file, tmp_path):
  out = str(tmp_path / "hf")
  prepare([docs_file[0]], gpt2_dir, out, workers=1, progress=False)
  tok = tokenizers.load(gpt2_dir)
  ids = tokens.Prepared.open(out).tokens("train")
  ids = ids[np.arange(len(ids))]
  assert tok.eos_id is not None and (ids == tok.eos_id).sum() == 180
  first = tok.encode(docs_file[1][0])
  np.testing.assert_array_equal(ids[:len(first) + 1], [*first, tok.eos_id])


def test_preparing_into_a_dir_of_another_input_or_tokenizer_is_refused_naming_the_difference(docs_file, prepared,
                                                                                            tmp_path):
  more = str(tmp_path / "more.jsonl")
  write_docs(more, n=5, seed=1)
  with pytest.raises(errors.UserError, match=rf"input {more} is new"):
    prepare([docs_file[0], more], "byte", prepared, shard_tokens=5000, progress=False)
  with pytest.raises(errors.UserError, match=r"the tokenizer was 'byte', now 'char'"):
    prepare([docs_file[0]], "char", prepared, shard_tokens=5000, progress=False)
  with pytest.raises(errors.UserError, match=r"--shard_tokens=5000, now 6000"):
    prepare([docs_file[0]], "byte", prepared, shard_tokens=6000, progress=False)


@pytest.mark.parametrize("line, says", [('{"txt": "b"}', r"line 3 has no 'text' \(keys: txt\): set --text_key"),
                                         ('{"text": "b', r"line 3 is not JSON \(.*\): each line of a .jsonl holds"),
                                         ('["b"]', r"line 3 has no 'text' \(keys: list\)")])
def test_a_bad_jsonl_line_is_refused_naming_its_file_and_line_though_a_worker_parses_it(line, says, tmp_path):
  path = tmp_path / "docs.jsonl"
  path.write_text('{"text": "a"}\n\n' + line + "\n")  # the blank line is skipped, and still counted
  with pytest.raises(errors.UserError, match=f"{path} {says}"):
    prepare([str(path)], "byte", str(tmp_path / "out"), workers=2, progress=False)


def train_args(out, workdir, *extra):
  return ["bigmodel.train", "--config=configs/shakespeare/gpt_char.py", f"--workdir={workdir}",
          "--config.data.name=tokens", f"--config.data.path={out}", "--config.data.tokenizer=",
          "--config.model.num_layers=1", "--config.model.dim=32", "--config.model.num_heads=2",
          "--config.data.seq_len=16", "--config.data.batch_size=8", "--config.data.eval_batch_size=512",
          "--config.optimizer.warmup_steps=2", "--config.total_steps=30", "--config.log_every=5",
          "--config.eval_every=30", "--config.checkpoint_every=5", "--config.compilation_cache=", *extra]


def one_error_line(proc):
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: "), proc.stderr[-3000:]
  return lines[-1]


def test_a_config_mistake_is_reported_before_any_data_is_read(tmp_path):
  proc = run_cli(*train_args(str(tmp_path / "no_such_corpus"), tmp_path / "run",
                             "--config.optimizer.warmup_steps=30"), check=False, timeout=120)
  assert "optimizer.warmup_steps=30 must be below total_steps=30" in one_error_line(proc)


@pytest.mark.slow  # two CLI trainings (~20 s of the fast tier)
@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_truncated_or_foreign_shard_is_one_error_line_naming_the_file(damage, docs_file, prepared, tmp_path):
  out = str(tmp_path / "copy")
  prepare([docs_file[0]], "byte", out, shard_tokens=5000, progress=False)
  shard = os.path.join(out, "train-00001.bin")
  if damage == "truncated":
    os.truncate(shard, os.path.getsize(shard) - 2)
  else:  # the same size, from another corpus
    other = str(tmp_path / "other")
    write_docs(str(tmp_path / "other.jsonl"), seed=5)
    prepare([str(tmp_path / "other.jsonl")], "byte", other, shard_tokens=5000, progress=False)
    with open(os.path.join(other, "train-00001.bin"), "rb") as f, open(shard, "wb") as g:
      g.write(f.read())
  line = one_error_line(run_cli(*train_args(out, tmp_path / "run"), check=False, timeout=120))
  assert f"Shard {shard} " in line, line


def test_a_corpus_whose_tokenizer_is_not_init_hfs_is_one_error_line_naming_both(gpt2_dir, prepared, tmp_path):
  line = one_error_line(run_cli(*train_args(prepared, tmp_path / "run", f"--config.init.hf={gpt2_dir}"),
                                check=False, timeout=180))
  assert f"{prepared} was prepared with tokenizer 'byte'" in line and repr(gpt2_dir) in line, line


def wait_for(predicate, proc, timeout=240):
  start = time.time()
  while not predicate():
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() - start < timeout, "timed out"
    time.sleep(0.02)


@pytest.mark.slow
def test_a_sigkilled_prepare_run_again_ends_byte_identical_to_an_uninterrupted_one(tmp_path):
  for i in range(4):
    write_docs(str(tmp_path / f"part{i}.jsonl"), n=400, seed=i, words=300)
  args = [f"--input={tmp_path}/part*.jsonl", "--tokenizer=byte", "--shard_tokens=40000", "--task_mb=0.05",
          "--workers=2"]
  run_cli("bigmodel.prepare", *args, f"--out={tmp_path}/whole")
  want = shard_bytes(str(tmp_path / "whole"))
  assert len(want) > 20
  killed = str(tmp_path / "killed")
  for shards_before_kill in (3, 9, 15):  # killed three times, at different points, then finished
    proc = subprocess.Popen([sys.executable, "-m", "bigmodel.prepare", *args, f"--out={killed}"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: len(glob.glob(f"{killed}/*.bin")) >= shards_before_kill, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the workers too
    proc.wait()
  assert len(glob.glob(f"{killed}/*.bin")) < len(want)
  run_cli("bigmodel.prepare", *args, f"--out={killed}")
  assert shard_bytes(killed) == want
  with open(f"{killed}/manifest.json") as a, open(f"{tmp_path}/whole/manifest.json") as b:
    assert a.read() == b.read()


@pytest.mark.slow
def test_prepare_train_sigkill_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
  write_docs(str(tmp_path / "docs.jsonl"), n=100, seed=0, words=4000)  # val: 10 docs, over 8,192 windows of 16
  out = str(tmp_path / "corpus")
  run_cli("bigmodel.prepare", f"--input={tmp_path}/docs.jsonl", "--tokenizer=byte", f"--out={out}",
          "--shard_tokens=100000")
  whole = run_cli(*train_args(out, tmp_path / "whole"))
  assert re.search(r"evaluated on 8,192 of [\d,]+ windows of val", whole.stderr), whole.stderr[-2000:]
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {XLA_TEST_FLAGS}")
  proc = subprocess.Popen([sys.executable, "-m", *train_args(out, tmp_path / "killed")], cwd=ROOT, env=env,
                          stderr=subprocess.PIPE, text=True)
  wait_for(lambda: os.path.exists(tmp_path / "killed" / "checkpoints" / "15"), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = run_cli(*train_args(out, tmp_path / "killed"))
  assert "Resumed from step" in resumed.stderr and "Resumed from step 30" not in resumed.stderr
  a, _, step_a = workdir_lib.read_weights(str(tmp_path / "whole"), None)
  b, _, step_b = workdir_lib.read_weights(str(tmp_path / "killed"), None)
  assert step_a == step_b == 30
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert json.loads(whole.stdout.strip().splitlines()[-1]) == json.loads(resumed.stdout.strip().splitlines()[-1])



@pytest.mark.slow
@pytest.mark.parametrize("path", ["configs/openwebtext/gpt2_small.py", "configs/mixture/gpt_plays_reviews.py"])
def test_the_corpus_recipes_train_on_corpora_prepared_the_way_their_docstrings_say(path, gpt2_dir, tmp_path):
  """The recipes, shrunk (a one-layer model, two steps), on small corpora prepared with the same commands."""
  from bigmodel.train import train_and_evaluate
  c = importlib.import_module(path[:-3].replace("/", ".")).get_config()
  dirs = []
  for seed in range(len(c.data.path) if isinstance(c.data.path, tuple) else 1):
    write_docs(str(tmp_path / f"docs{seed}.jsonl"), seed=seed)
    dirs.append(str(tmp_path / f"corpus{seed}"))
    prepare([str(tmp_path / f"docs{seed}.jsonl")], gpt2_dir if "openwebtext" in path else "byte", dirs[-1],
            workers=1, progress=False)
  c.data.path = tuple(dirs) if isinstance(c.data.path, tuple) else dirs[0]
  c.model.update(num_layers=1, dim=32, num_heads=2)
  c.data.update(seq_len=16, batch_size=8, eval_batch_size=64)
  c.micro_batches, c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 1, 2, 1, 2, 2
  c.optimizer.warmup_steps = 1
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert np.isfinite(final["loss"]) and final["loss"] < 8, final


@pytest.mark.slow
def test_two_processes_of_one_device_give_the_losses_of_one_process_of_two_on_a_prepared_corpus(prepared, tmp_path):
  args = train_args(prepared, tmp_path / "two", "--config.total_steps=10", "--config.log_every=1",
                    "--config.eval_every=10", "--config.checkpoint_every=10")
  env = dict(os.environ, XLA_FLAGS=XLA_TEST_FLAGS)
  proc = subprocess.run([sys.executable, "-m", "bigmodel.launch", "--processes=2", "--devices_per_process=1", "--",
                         sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  one = train_args(prepared, tmp_path / "one", "--config.total_steps=10", "--config.log_every=1",
                   "--config.eval_every=10", "--config.checkpoint_every=10")
  run_cli(*one, devices=2)
  losses = {}
  for name in ("two", "one"):
    rows = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
    losses[name] = [r["loss"] for r in rows if r["split"] == "train"]
  assert len(losses["one"]) == 10 and len(set(losses["one"])) > 1
  np.testing.assert_allclose(losses["two"], losses["one"], rtol=2e-4)
