"""Instruction tuning (data.name=chat, bigmodel/data/conversations.py): the loss is taken on the assistant's
tokens and their end of turn and nowhere else, in every turn; a training example's ids are the served prompt's
ids (chat.py, as transformers' apply_chat_template gives them) followed by the answer's; too-long conversations
are cut and counted; bad records are refused by line. On a tiny random Llama whose tokenizer carries Llama 3's
or Qwen2's (ChatML) chat template, made by transformers here."""
import json
import logging
import os

import jax
import ml_collections
import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from bigmodel import chat, data, errors, losses, tokenizers  # noqa: E402
from bigmodel.data import conversations  # noqa: E402
from test_chat import chat_checkpoint  # noqa: E402
from test_huggingface import ours  # noqa: E402

SYSTEM = "You are terse."
MULTI = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is two and two?"},
         {"role": "assistant", "content": "Four, my lord."}, {"role": "user", "content": "And three and three?"},
         {"role": "assistant", "content": "Six."}, {"role": "user", "content": "Thank you."}]
CONFIG = "configs/fine_foods/smollm2_chat_lora.py"  # trained here, not in test_configs.py
FULL_CONFIG = "configs/fine_foods/smollm2_chat_full.py"  # so is this one
SINGLE = {"prompt": "Review: good tea. Is this review great or other?", "completion": "great"}


@pytest.fixture(scope="module", params=["llama3", "qwen2"])
def checkpoint(request, tmp_path_factory):
  """A random 2-layer Llama beside a tokenizer with `request.param`'s chat template and special tokens."""
  import torch
  directory = chat_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=88, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
  torch.manual_seed(0)
  transformers.LlamaForCausalLM(config).save_pretrained(directory)
  return directory


@pytest.fixture(scope="module")
def model(checkpoint):
  """(our model, its variables) of the checkpoint."""
  vocab = len(transformers.AutoTokenizer.from_pretrained(checkpoint))
  return ours(checkpoint, np.zeros((1, 8), np.int32), num_outputs=vocab)


def data_config(directory, files, seq_len=96, pack=False):
  return ml_collections.ConfigDict({**data.DEFAULTS, "name": "chat", "files": tuple(map(str, files)),
                                    "tokenizer": directory, "seq_len": seq_len, "pack": pack})


def write_jsonl(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return path


def load(directory, tmp_path, records, seq_len=96, pack=False):
  files = [write_jsonl(tmp_path / f"{split}.jsonl", records) for split in ("train", "test")]
  return data.load(data_config(directory, files, seq_len, pack))


def template_of(directory):
  return chat.template(tokenizers.load(directory))


def encode(template, text):
  return template.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids


def positions_of(ids, content_ids):
  """Where `content_ids` stand in `ids` (its first occurrence)."""
  n = len(content_ids)
  starts = [i for i in range(len(ids) - n + 1) if list(ids[i:i + n]) == list(content_ids)]
  assert starts, "the content's tokens are not in the conversation's"
  return list(range(starts[0], starts[0] + n))


def loss_terms(model, variables, x_L, y_L):
  logits = model.apply(variables, x_L[None])
  return np.asarray(losses.lm_xent(logits, y_L[None])[0])


def test_the_prompt_ids_are_the_served_prompts_and_the_answer_follows(checkpoint, tmp_path):
  template = template_of(checkpoint)
  reference = transformers.AutoTokenizer.from_pretrained(checkpoint)
  dataset = load(checkpoint, tmp_path, [{"messages": MULTI}, SINGLE])
  for row, messages in enumerate([MULTI, [{"role": "user", "content": SINGLE["prompt"]},
                                          {"role": "assistant", "content": SINGLE["completion"]}]]):
    x_L = dataset.splits["train"].arrays["x"][row]
    for i in [i for i, m in enumerate(messages) if m["role"] == "assistant"]:
      served = template.encode(messages[:i], add_generation_prompt=True).tolist()
      out = reference.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=True)
      assert served == list(out["input_ids"] if hasattr(out, "keys") else out)  # chat.py is transformers' rendering
      answer = encode(template, messages[i]["content"].strip())
      assert x_L[:len(served) + len(answer)].tolist() == served + answer, (row, i)


def test_changing_a_user_or_system_token_changes_no_loss_term(checkpoint, model):
  template = template_of(checkpoint)
  example = conversations.example(template, MULTI)
  model, variables = model
  (xy, _, _), seq_len = conversations.rows([example], 96), 96
  terms = loss_terms(model, variables, xy["x"][0], xy["y"][0])
  for message in (m for m in MULTI[:-1] if m["role"] in ("system", "user")):  # the last: after every answer
    for p in positions_of(example.ids, encode(template, message["content"])):
      changed = conversations.Example(example.ids.copy(), example.answer, 0)
      changed.ids[p] = (changed.ids[p] + 1) % 300
      y_L = conversations.rows([changed], seq_len)[0]["y"][0]
      assert np.array_equal(loss_terms(model, variables, xy["x"][0], y_L), terms), (message["role"], p)


def test_changing_an_assistant_token_changes_exactly_its_own_term(checkpoint, model):
  template = template_of(checkpoint)
  example = conversations.example(template, MULTI)
  model, variables = model
  xy, _, _ = conversations.rows([example], 96)
  terms = loss_terms(model, variables, xy["x"][0], xy["y"][0])
  answers = [m for m in MULTI if m["role"] == "assistant"]
  eot = np.flatnonzero(example.ids == template.end_of_turn_id)
  for message in answers:
    content = positions_of(example.ids, encode(template, message["content"]))
    for p in content + [int(eot[eot > content[-1]][0])]:  # its words and its end of turn
      changed = conversations.Example(example.ids.copy(), example.answer, 0)
      changed.ids[p] = (changed.ids[p] + 1) % 300
      y_L = conversations.rows([changed], 96)[0]["y"][0]
      differs = np.flatnonzero(loss_terms(model, variables, xy["x"][0], y_L) != terms)
      assert differs.tolist() == [p - 1], (message["content"], p)  # the term whose target is token p


def test_packed_rows_give_each_conversation_the_loss_terms_it_has_alone_in_a_row(checkpoint, model, tmp_path):
  """data.pack: several conversations share a row; with its segments the model computes each as if alone (the
  same loss terms, to float32 rounding); without them (a plain row) the later ones' terms change."""
  records = [SINGLE, {"prompt": "Hi.", "completion": "Hello, my lord."}, {"prompt": "Bye.", "completion": "Farewell."},
             {"messages": MULTI}, SINGLE]
  model, variables = model
  alone = load(checkpoint, tmp_path, records, seq_len=120).splits["train"].arrays
  packed = load(checkpoint, tmp_path, records, seq_len=120, pack=True).splits["train"].arrays
  assert len(alone["x"]) == len(records) and 1 < len(packed["x"]) < len(records)
  apply = jax.jit(model.apply)
  each = [terms[y >= 0] for terms, y in zip(np.asarray(losses.lm_xent(apply(variables, alone["x"]), alone["y"])),
                                            alone["y"])]
  rows = np.asarray(losses.lm_xent(apply(variables, packed["x"], segments_BxL=packed["segments"]), packed["y"]))
  plain = np.asarray(losses.lm_xent(apply(variables, packed["x"]), packed["y"]))
  got, ignored = [], []
  for row, y, segments, unsegmented in zip(rows, packed["y"], packed["segments"], plain):
    for s in range(1, segments.max() + 1):
      got.append(row[(segments == s) & (y >= 0)])
      ignored.append(unsegmented[(segments == s) & (y >= 0)])
  assert len(got) == len(each)
  for mine, theirs in zip(got, each):
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)
  assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(ignored, each))  # the segments do the work


def test_packing_for_a_model_that_cannot_keep_conversations_apart_is_refused_before_any_data_is_read():
  from bigmodel import config as config_lib, sharding, train
  c = config_lib.resolve(ml_collections.ConfigDict(dict(
      data=dict(name="chat", files=("no_such_train.jsonl", "no_such_test.jsonl"), pack=True), model=dict(name="gpt"),
      loss="lm_xent")))
  with pytest.raises(errors.UserError, match=r"data.pack=True needs a model that keeps packed conversations apart "
                                             r"\(the Llama family\); model 'gpt' does not"):
    train.check(c, sharding.make_mesh(c.sharding))
  c.model = config_lib.resolve(ml_collections.ConfigDict(dict(model=dict(name="llama")))).model
  train.check(c, sharding.make_mesh(c.sharding))


def test_every_non_assistant_span_of_a_multi_turn_conversation_is_masked(checkpoint, tmp_path):
  template = template_of(checkpoint)
  y_L = load(checkpoint, tmp_path, [{"messages": MULTI}]).splits["train"].arrays["y"][0]
  counted = np.flatnonzero(y_L >= 0)
  runs = np.split(counted, np.flatnonzero(np.diff(counted) > 1) + 1)
  answers = [m["content"] for m in MULTI if m["role"] == "assistant"]
  assert len(runs) == len(answers)
  for run, content in zip(runs, answers):  # each counted span is exactly an answer and its end of turn
    assert y_L[run].tolist() == encode(template, content) + [template.end_of_turn_id]
  # What the loss leaves out holds the system message, both user messages and every header.
  left_out = template.tokenizer.tokenizer.decode([int(t) for t in y_L[y_L >= 0]], skip_special_tokens=False)
  assert SYSTEM not in left_out and "two and two" not in left_out and "Thank you" not in left_out


def test_too_long_conversations_are_cut_to_their_first_tokens_and_counted(checkpoint, tmp_path, caplog):
  template = template_of(checkpoint)
  long_answer = {"prompt": "Say it.", "completion": "word " * 60}
  late_answer = {"prompt": "many words " * 60, "completion": "No."}
  short_ids = conversations.example(template, conversations.messages_of(SINGLE, "")).ids
  seq_len = len(short_ids) + 2
  with caplog.at_level(logging.INFO):
    dataset = load(checkpoint, tmp_path, [SINGLE, long_answer, late_answer], seq_len)
  arrays = dataset.splits["train"].arrays
  assert len(arrays["y"]) == 2  # the late answer is dropped: no answer token is left in its first tokens
  full = conversations.example(template, conversations.messages_of(long_answer, ""))
  assert arrays["x"][1].tolist() == full.ids[:seq_len].tolist()  # its first seq_len + 1 ids: x, then y's last
  assert arrays["y"][1][-1] == full.ids[seq_len]
  assert "3 conversations, 2 longer than data.seq_len + 1" in caplog.text and "1 of those dropped" in caplog.text


@pytest.mark.parametrize("line,message", [
    ('{"messages": [{"role": "user", "content": "Hi"}]}', "has no assistant message"),
    ('{"messages": [{"role": "robot", "content": "Hi"}]}', "role 'robot'"),
    ('{"prompt": "Hi"}', "{\"prompt\": str, \"completion\": str}"),
    ('{"prompt": "Hi", ', "is not JSON"),
])
def test_a_bad_record_is_refused_naming_its_file_and_line(checkpoint, tmp_path, line, message):
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps(SINGLE) + "\n" + line + "\n")
  good = write_jsonl(tmp_path / "good.jsonl", [SINGLE])
  with pytest.raises(errors.UserError, match=f"{bad}:2") as e:
    data.load(data_config(checkpoint, [good, bad]))
  assert message in str(e.value)


def test_a_tokenizer_without_a_chat_template_is_refused(tmp_path):
  good = write_jsonl(tmp_path / "good.jsonl", [SINGLE])
  with pytest.raises(errors.UserError, match="needs a tokenizer with a chat template"):
    data.load(data_config("", [good, good]))


def test_an_answer_counts_only_when_it_is_the_label_word():
  from experiments.instruction_tuning import data as chat_data
  assert [chat_data.answer(a) for a in ("great", " Great.", "OTHER!", "other\n")] == ["great", "great", "other", "other"]
  assert [chat_data.answer(a) for a in ("This review is great.", "grea", "", "great other")] == [None] * 4


def label_run(config_path, checkpoint, tmp_path, n, train, steps, learning_rate):
  """The config at `config_path` set to tune the tiny Llama for `steps` on `train` of `n` made-up reviews whose
  label is their one word (the first 16 are the test file): (config, the reviews, the untuned variables, their
  loss on the test answers)."""
  import importlib
  from experiments.instruction_tuning import data as chat_data
  rng = np.random.default_rng(0)
  records = [{"prompt": chat_data.question(f"{w} tea."), "completion": "great" if w == "superb" else "other"}
             for w in rng.choice(["superb", "stale"], n)]
  files = [write_jsonl(tmp_path / "train.jsonl", records), write_jsonl(tmp_path / "test.jsonl", records[:16])]
  c = importlib.import_module(config_path[:-3].replace("/", ".")).get_config()
  c.init.hf, c.data.files, c.data.seq_len, c.data.train_examples = checkpoint, tuple(map(str, files)), 120, train
  c.data.batch_size, c.data.eval_examples, c.model.max_len = 8, 16, 128
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, steps // 3, steps, steps
  c.optimizer.learning_rate, c.optimizer.warmup_steps = learning_rate, 1
  model, variables = ours(checkpoint, np.zeros((1, 8), np.int32),
                          num_outputs=len(transformers.AutoTokenizer.from_pretrained(checkpoint)))
  test = data.load(data_config(checkpoint, files, 120)).splits["test"].arrays
  before = float(np.sum(losses.lm_xent(model.apply(variables, test["x"]), test["y"])) / np.sum(test["y"] >= 0))
  return c, records, variables, before


@pytest.mark.slow  # a training run: the fast tier (-m 'not slow') leaves it out
def test_the_chat_lora_config_lowers_the_answer_loss_and_answers_through_the_servers_decoding(checkpoint, tmp_path):
  """configs/fine_foods/smollm2_chat_lora.py on the tiny Llama and made-up reviews whose label is their one word:
  the loss on the test answers falls, and experiments/instruction_tuning/run.py's greedy answers come back."""
  from bigmodel import runs
  from bigmodel.train import train_and_evaluate
  from experiments.instruction_tuning import run as experiment
  c, records, _, before = label_run(CONFIG, checkpoint, tmp_path, n=64, train=48, steps=30, learning_rate=1e-2)
  c.data.pack = "qwen2" in os.path.basename(checkpoint)  # one template's run trains on packed rows (segments)
  after = train_and_evaluate(c, str(tmp_path / "run"))["loss"]
  assert after < before, (before, after)
  run = runs.load(str(tmp_path / "run"))
  said = experiment.answers(run.model, run.params, run.tokenizer, chat.template(run.tokenizer), records[:16])
  assert experiment.score(said, records[:16])["accuracy"] > 0.5, said
  served_tuned_model_answers_as_the_run_does(tmp_path, run, records[:16])


@pytest.mark.slow  # a training run: the fast tier (-m 'not slow') leaves it out
def test_the_full_fine_tuning_config_trains_every_weight_and_lowers_the_answer_loss(checkpoint, tmp_path):
  """configs/fine_foods/smollm2_chat_full.py (no LoRA factors) on the tiny Llama: every weight moves, the loss on
  the test answers falls."""
  from bigmodel import runs
  from bigmodel.train import train_and_evaluate
  c, _, variables, before = label_run(FULL_CONFIG, checkpoint, tmp_path, n=32, train=32, steps=10, learning_rate=1e-3)
  assert c.optimizer.lora.rank == 0
  after = train_and_evaluate(c, str(tmp_path / "run"))["loss"]
  assert after < before, (before, after)
  tuned = runs.load(str(tmp_path / "run")).params
  moved = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)), variables["params"], tuned)
  assert all(jax.tree.leaves(moved)), moved


def served_tuned_model_answers_as_the_run_does(tmp_path, run, records):
  """The tuned run exported as GGUF and in bigmodel's format, each served by `python -m bigmodel.serve` and asked
  with the openai client's chat.completions.create: every greedy answer equals the run's own (through the
  server's template, continuous batch and stop at the end of turn), so the served model answers with the label."""
  from bigmodel import export
  from conftest import run_cli
  from test_serve import Server, client_at
  from experiments.instruction_tuning import run as experiment
  held_out = [{"prompt": r["prompt"].replace(" tea.", " coffee."), "completion": r["completion"]} for r in records]
  said = experiment.answers(run.model, run.params, run.tokenizer, chat.template(run.tokenizer), held_out)
  run_cli("bigmodel.export", f"--workdir={tmp_path / 'run'}", f"--out={tmp_path / 'tuned.gguf'}", "--format=gguf")
  export.export(str(tmp_path / "run"), str(tmp_path / "served"), platforms=("cpu",))
  servers = [Server(str(tmp_path / model), tmp_path / f"{model}.log", "--slots=2", "--lengths=128",
                    f"--max_new_tokens={experiment.MAX_NEW_TOKENS}") for model in ("tuned.gguf", "served")]
  try:
    for server in servers:
      server.wait(timeout=300)
      api = client_at(server.port)
      name = api.models.list().data[0].id
      replies = [api.chat.completions.create(model=name, messages=[{"role": "user", "content": r["prompt"]}],
                                             max_tokens=experiment.MAX_NEW_TOKENS, temperature=0) for r in held_out]
      assert [reply.choices[0].message.content for reply in replies] == said, server.log_path
      assert experiment.score(said, held_out)["accuracy"] > 0.5, said
  finally:
    for server in servers:
      server.stop()
