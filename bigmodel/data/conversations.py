"""Conversations as instruction-tuning examples: `data.name=chat`.

Files: `data.files` = (train file, eval file), each .jsonl, one conversation a line, in either form:

  {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                {"role": "assistant", "content": "..."}, ...]}      # OpenAI's: any number of turns
  {"prompt": "...", "completion": "..."}                            # one user message and its answer

The splits are named "train" and "test" (data.eval_split="test").

Rendering: the run's chat template (the tokenizer's, bigmodel/chat.py: the code the server renders a request
with). A conversation is cut at its assistant messages into pieces: before answer i, what
render(messages[:i], add_generation_prompt=True) adds to the text so far (the next user turn, the assistant's
header); then the answer, what render(messages[:i + 1], add_generation_prompt=False) adds to that. Each piece
is tokenized on its own, so the ids before an answer are the ids the server feeds the model for that
conversation (chat.ChatTemplate.encode) and the answer's ids follow them. Messages after the last answer
carry no loss and are left out.

Loss: on the answers only. The tokens of every assistant message, through its end-of-turn token (what ends a
reply when it is served: <|im_end|>, <|eot_id|>, ...), are targets; every other position's target is -1,
which the language-model loss already ignores (losses.lm_xent; tasks.LanguageModel.weights), as it ignores
the padding: rows are padded with -1 to data.seq_len.

Too long: a conversation of more than data.seq_len + 1 tokens keeps its first seq_len + 1 (the inputs are
seq_len tokens, the targets the next token of each), so the prompt stays whole and the end of a late answer
is cut; one left without any answer token is dropped. Both counts go to the log.

Packing (data.pack, off by default): short conversations share a row instead of each padding its own. In
their order, each row takes as many whole conversations as fit in data.seq_len inputs; a batch then carries
`segments` (1, 2, ... for the row's conversations, 0 for padding), with which the model keeps them apart:
a token attends only to its own conversation and positions restart at each (models/llama.py), so each
conversation's loss terms are those it has alone in a row. Fewer rows: a step sees more conversations.
"""
import dataclasses
import json

import numpy as np
from absl import logging

from bigmodel import chat, errors
from bigmodel.data import text
from bigmodel.data.dataset import Dataset, InMemory, register
from bigmodel.registry import Key

SPLITS = ("train", "test")
KEYS = dict(  # data.<key>, for data.name=chat: see data/__init__.py
    pack=Key(False, "chat: several whole conversations in one row of data.seq_len, each seeing only itself "
                    "(data/conversations.py); False: one conversation a row"),
)


@dataclasses.dataclass
class Example:
  ids: np.ndarray  # the conversation's token ids
  answer: np.ndarray  # bool, one per id: is it an answer's token (a loss target)?
  num_bytes: int  # of its text (UTF-8), for bits per byte


def read_jsonl(path):
  """The conversations of a .jsonl file, each as a list of messages."""
  conversations = []
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.readlines()
  except OSError as e:
    raise errors.UserError(f"Cannot read data.files entry {path!r}: {e.strerror}.") from e
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise errors.UserError(f"{path}:{n} is not JSON ({e.msg}); each line holds one conversation.") from e
    conversations.append(messages_of(record, f"{path}:{n}"))
  if not conversations:
    raise errors.UserError(f"{path} holds no conversations: one JSON object a line, {{\"messages\": [...]}} or "
                           "{\"prompt\": ..., \"completion\": ...}.")
  return conversations


def messages_of(record, where):
  """A record's messages: its "messages", or its prompt and completion as a user and an assistant message."""
  if isinstance(record, dict) and "messages" in record:
    messages = record["messages"]
  elif isinstance(record, dict) and isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
    messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
  else:
    raise errors.UserError(f"{where}: a conversation is {{\"messages\": [...]}} or {{\"prompt\": str, "
                           "\"completion\": str}.")
  try:
    chat.check(messages)
  except errors.UserError as e:
    raise errors.UserError(f"{where}: {e}") from e
  if not any(m["role"] == "assistant" for m in messages):
    raise errors.UserError(f"{where}: the conversation has no assistant message, so nothing to learn from.")
  return messages


def pieces(template, messages):
  """[(text, is_answer), ...]: the conversation's text up to its last answer, cut where each answer starts
  and ends (see the module's docstring)."""
  out, done = [], ""
  for i, m in enumerate(messages):
    if m["role"] != "assistant":
      continue
    prompt = template.render(messages[:i], add_generation_prompt=True)
    whole = template.render(messages[:i + 1], add_generation_prompt=False)
    if not prompt.startswith(done) or not whole.startswith(prompt):
      raise errors.UserError("The chat template renders a conversation's beginning differently once it goes on "
                             f"(at message {i}), so its answers cannot be cut out of it for the loss.")
    out += [(prompt[len(done):], False), (whole[len(prompt):], True)]
    done = whole
  return [(t, a) for t, a in out if t]


def example(template, messages) -> Example:
  """The ids of a conversation and which of them are answer tokens: each answer through its first end-of-turn
  token (the rest of that piece, e.g. ChatML's newline after <|im_end|>, is not a target)."""
  encode = lambda t: np.asarray(template.tokenizer.tokenizer.encode(t, add_special_tokens=False).ids, np.int32)
  ids, answer, num_bytes = [], [], 0
  for piece, is_answer in pieces(template, messages):
    num_bytes += len(piece.encode("utf-8"))
    piece_ids = encode(piece)
    marks = np.full(len(piece_ids), is_answer)
    if is_answer:
      ends = np.flatnonzero(piece_ids == template.end_of_turn_id)
      if len(ends):
        marks[ends[0] + 1:] = False
    ids.append(piece_ids)
    answer.append(marks)
  return Example(np.concatenate(ids), np.concatenate(answer), num_bytes)


def rows(examples, seq_len, pack=False):
  """{"x", "y"} arrays (N x seq_len, -1 padded; y is -1 where the loss takes nothing), with "segments" when
  packed, and the counts of conversations cut and dropped (module docstring: too long, packing)."""
  placed, cut, dropped = [], 0, 0  # rows, each a list of (inputs, targets)
  for e in examples:
    ids, answer = e.ids[:seq_len + 1], e.answer[:seq_len + 1]
    cut += len(e.ids) > seq_len + 1
    if not answer[1:].any():
      dropped += 1
      continue
    if not placed or not pack or sum(len(x) for x, _ in placed[-1]) + len(ids) - 1 > seq_len:
      placed.append([])
    placed[-1].append((ids[:-1], np.where(answer[1:], ids[1:], -1)))
  arrays = {key: np.full((len(placed), seq_len), fill, np.int32)
            for key, fill in (("x", -1), ("y", -1), ("segments", 0))}
  for i, row in enumerate(placed):
    at = 0
    for segment, (x, y) in enumerate(row, 1):
      arrays["x"][i, at:at + len(x)], arrays["y"][i, at:at + len(y)] = x, y
      arrays["segments"][i, at:at + len(x)] = segment
      at += len(x)
  if not pack:
    del arrays["segments"]
  return arrays, cut, dropped


def dataset(c, conversations, name="chat") -> Dataset:
  """A language-model Dataset from {split: [messages, ...]}: the loss on the answers (module docstring)."""
  tok = text.tokenizer_for(c, "") if c.tokenizer else None
  template = tok and chat.template(tok)
  if template is None:
    raise errors.UserError(f"data.name={c.name!r} needs a tokenizer with a chat template: set init.hf (or "
                           f"data.tokenizer) to an instruction-tuned checkpoint; {c.tokenizer or 'char'!r} has none.")
  splits, bytes_per_token = {}, {}
  for split, convs in conversations.items():
    examples = [example(template, m) for m in convs]
    arrays, cut, dropped = rows(examples, c.seq_len, c.pack)
    if not len(arrays["y"]):
      raise errors.UserError(f"No {split} conversation has an answer token within data.seq_len={c.seq_len}: "
                             "raise data.seq_len.")
    logging.log(logging.WARNING if cut else logging.INFO,
                "chat %s: %d conversations, %d longer than data.seq_len + 1 = %d tokens cut to their first %d, "
                "%d of those dropped (no answer token left); %d answer tokens in %d rows.", split, len(convs), cut,
                c.seq_len + 1, c.seq_len + 1, dropped, int((arrays["y"] >= 0).sum()), len(arrays["y"]))
    splits[split] = InMemory(arrays)
    bytes_per_token[split] = sum(e.num_bytes for e in examples) / sum(len(e.ids) for e in examples)
  return Dataset(name=name, kind="corpus", splits=splits, num_classes=tok.vocab_size, example_shape=(c.seq_len,),
                 tokenizer=tok, bytes_per_token=bytes_per_token, input_dtype="int32")


@register("chat")
def load_chat(c) -> Dataset:
  if len(c.files) != 2:
    raise errors.UserError("data.name='chat' needs data.files=(train file, eval file), each .jsonl of "
                           "{\"messages\": [...]} or {\"prompt\": ..., \"completion\": ...} lines.")
  return dataset(c, {split: read_jsonl(path) for split, path in zip(SPLITS, c.files)})
