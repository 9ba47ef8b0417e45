"""The server's parts in-process, without a server or an exported model: request parsing (requests.py),
the transport's JSON reading (http.parse_json), stop strings (stops.py) against a brute-force reference,
the options' flags, and decoding.Slots' buckets on a toy model whose tokens are known."""
import json
import queue
import random

import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from bigmodel import decoding, errors, tokenizers
from bigmodel.serving import options as options_lib
from bigmodel.serving import batching, requests, stops
from bigmodel.serving.http import MAX_DEPTH, HTTPError, parse_json

SONG = "ten green bottles hanging on the wall\n"
TOK = tokenizers.build("char", SONG)
LIMITS = requests.Limits(name="song", max_new_tokens=64, max_queue=32, context=16, vocab_size=TOK.vocab_size,
                         encode=TOK.encode, decode=TOK.decode)


def refused(request_type, body, limits=LIMITS):
  """The HTTPError that parsing `body` raises."""
  with pytest.raises(HTTPError) as e:
    requests.parse(request_type, body, limits)
  return e.value


def test_a_completion_request_gets_its_declared_defaults_and_encoded_prompts():
  r = requests.parse(requests.Completion, {"model": "song", "prompt": "ten", "seed": None}, LIMITS)
  assert (r.max_tokens, r.temperature, r.top_p, r.n, r.seed, r.logprobs, r.echo, r.stream) == (
      16, 1.0, 1.0, 1, None, None, False, False)
  assert r.prompt == (("ten", TOK.encode("ten").tolist()),) and r.stop.strings == ()
  ids = TOK.encode("wall").tolist()
  r = requests.parse(requests.Completion, {"model": "song", "prompt": [ids, "on"], "n": 2, "stop": "\n",
                                           "max_tokens": 64, "logprobs": 0, "presence_penalty": 0}, LIMITS)
  assert r.prompt == (("wall", ids), ("on", TOK.encode("on").tolist())) and r.n == 2 and r.max_tokens == 64
  assert r.stop.strings == ("\n",) and r.logprobs == 0
  g = requests.parse(requests.Generate, {"prompt": "ten"}, LIMITS)
  assert (g.max_new_tokens, g.top_k, g.seed) == (64, 0, 0)  # min(64, --max_new_tokens)
  assert requests.parse(requests.Generate, {"prompt": "ten"}, requests.Limits(**{
      **LIMITS.__dict__, "max_new_tokens": 10})).max_new_tokens == 10


@pytest.mark.parametrize("request_type,body,status,param,message", [
    (requests.Completion, [1], 400, None, "must be a JSON object"),
    (requests.Completion, {"prompt": "ten"}, 400, "model", "Missing field(s): model"),
    (requests.Completion, {"model": "song", "prompt": "ten", "beams": 2}, 400, "beams", "Unknown field(s): beams"),
    (requests.Completion, {"model": "gpt-4", "prompt": "ten"}, 404, "model", "this server serves 'song'"),
    (requests.Completion, {"model": "song", "prompt": "TEN"}, 400, "prompt", "cannot be encoded"),
    (requests.Completion, {"model": "song", "prompt": SONG}, 400, "prompt", "The prompt is 38 tokens"),
    (requests.Completion, {"model": "song", "prompt": [[]]}, 400, "prompt", "prompt must be a string, a list"),
    (requests.Completion, {"model": "song", "prompt": [0, 99]}, 400, "prompt", "Token ids must be in [0, "),
    (requests.Completion, {"model": "song", "prompt": "ten", "max_tokens": 65}, 400, "max_tokens", "[0, 64]"),
    (requests.Completion, {"model": "song", "prompt": "ten", "temperature": True}, 400, "temperature", "a number"),
    (requests.Completion, {"model": "song", "prompt": "ten", "n": 17}, 400, "n", "an integer in [1, 16]"),
    (requests.Completion, {"model": "song", "prompt": ["ten"] * 3, "n": 11}, 400, "n", "more sequences than"),
    (requests.Completion, {"model": "song", "prompt": "ten", "stop": ["a"] * 5}, 400, "stop", "up to 4 of them"),
    (requests.Completion, {"model": "song", "prompt": "ten", "stop": "a" * 1001}, 400, "stop", "at most 1,000"),
    (requests.Completion, {"model": "song", "prompt": "ten", "echo": 1}, 400, "echo", "true or false"),
    (requests.Completion, {"model": "song", "prompt": "ten", "best_of": 2}, 400, "best_of", "not supported"),
    (requests.Generate, {"prompt": "ten", "top_k": -1}, 400, "top_k", "top_k must be an integer"),
    (requests.Generate, {"prompt": 5}, 400, "prompt", "prompt must be a string"),
    (requests.ClassifyText, {"text": ["ten"]}, 400, "text", "text must be a string"),
])
def test_a_bad_request_is_refused_naming_its_field(request_type, body, status, param, message):
  e = refused(request_type, body)
  assert (e.status, e.param) == (status, param) and message in str(e), (e.status, e.param, str(e))
  assert set(e.body()["error"]) == {"message", "type", "param", "code"}


def test_a_classifier_input_is_checked_against_the_models_shape_and_dtype():
  limits = requests.Limits(name="m", input={"shape": [2, 3], "dtype": "uint8"})
  x = requests.parse(requests.ClassifyInput, {"input": [[0, 1, 2], [3, 4, 255]]}, limits).input
  assert x.dtype == np.uint8 and x.tolist() == [[0, 1, 2], [3, 4, 255]]
  for value, message in [([[0, 1, 2]], "has shape [1, 3]"), ([[0, 1, 2], [3, 4]], "unequal lengths"),
                         ([[0, 1, 2], [3, 4, 256]], "0..255"), ([[0, 1, "a"], [3, 4, 5]], "holds strings"),
                         ([[0, 1, 2], [3, 4, 1e999]], "infinite")]:
    assert message in str(refused(requests.ClassifyInput, {"input": value}, limits))


def test_every_field_of_a_request_is_declared_with_its_meaning_and_described_from_it():
  described = requests.describe(requests.Completion, LIMITS)
  assert described["max_tokens"] == "tokens to draw; an integer in [0, 64]; default 16"
  assert described["model"].endswith("required") and "at most 1000 characters" in described["stop"]
  assert list(requests.describe(requests.Generate, LIMITS)) == [
      "prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "ignore_eos"]


def test_the_transport_refuses_json_too_deep_or_not_valid_unicode_with_a_400():
  assert parse_json(b'{"a": [[1]], "b": "\\ud83d\\ude00"}') == {"a": [[1]], "b": "\U0001F600"}  # a pair is fine
  deep = lambda n: ("[" * n + "]" * n).encode()
  assert parse_json(deep(MAX_DEPTH)) is not None
  for body in (deep(MAX_DEPTH + 1), deep(990), deep(100_000), b'{"a": ' + deep(990) + b"}"):
    with pytest.raises(HTTPError, match="nests too deeply") as e:
      parse_json(body)
    assert e.value.status == 400
  for body, param in [(b'{"\\ud800": 1}', None), (b'{"prompt": "a\\udfffb"}', "prompt"),
                      (b'{"stop": ["x", "\\ud800"]}', "stop"), (b'{"p": [{"\\udc00": 1}]}', "p"),
                      (b'"\\ud800"', None)]:
    with pytest.raises(HTTPError, match="not valid Unicode") as e:
      parse_json(body)
    assert e.value.status == 400 and e.value.param == param
    json.dumps(e.value.body(), ensure_ascii=False).encode("utf-8")  # the reply can be written
  for body in (b"{", b"\xff", b'{"a": NaN}'):
    with pytest.raises(HTTPError, match="not valid JSON"):
      parse_json(body)


def brute_force(text, strings, final):
  """stops.Watch.update's answer the slow way: the earliest stop string in the text, else the longest end
  of the text that starts one, and the incomplete last characters (U+FFFD) held back too."""
  whole = len(text) if final else len(text.rstrip("\ufffd"))
  starts = [i for i in (text[:whole].find(s) for s in strings) if i >= 0]
  if starts:
    return text[:min(starts)], 0
  prefix = max((k for s in strings for k in range(1, len(s)) if text[:whole].endswith(s[:k])), default=0)
  return None, prefix + len(text) - whole


def test_stop_strings_found_as_text_grows_equal_a_brute_force_search_of_the_whole_text():
  rng = random.Random(0)
  for trial in range(400):
    strings = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 4))]
    text, watch = "", stops.Watch(stops.Stops(strings))
    for step in range(30):
      text += "".join(rng.choice("ab\ufffd" if step % 3 else "ab") for _ in range(rng.randint(0, 3)))
      text = text[:len(text.rstrip("\ufffd"))] + "\ufffd" * (step % 2) if "\ufffd" in text[-1:] else text
      final = step == 29
      got, want = watch.update(text, final), brute_force(text, strings, final)
      assert got == want, (strings, text, got, want)
      if got[0] is not None:
        break


def test_a_sequence_stops_at_any_of_its_stop_ids_and_leaves_that_tokens_text_out():
  """A chat reply stops at the end of turn or at the end of text (Llama 3 may draw either): each ends the
  sequence with finish_reason "stop" and without its own text; another token goes on."""
  song = TOK.encode(SONG)
  end_of_turn, end_of_text = int(song[1]), int(song[2])  # "e" and "n" stand in for the two special tokens
  for stopper in (end_of_turn, end_of_text):
    events = queue.SimpleQueue()
    seq = batching.Sequence(0, song[:1], events, max_tokens=8, stop_ids=(end_of_turn, end_of_text),
                            decode=TOK.decode)
    drawn = [int(song[0]), int(song[3]), stopper]  # "t", " ", then the stop
    finished = [seq.add(decoding.Token(t, 0.0, None, None), end_of_context=False) for t in drawn]
    assert finished == [False, False, True]
    got = [events.get_nowait() for _ in drawn]
    assert "".join(e.text for e in got) == "t " and got[-1].finish_reason == "stop"
  seq = batching.Sequence(0, song[:1], queue.SimpleQueue(), max_tokens=2, stop_ids=(), decode=TOK.decode)
  assert [seq.add(decoding.Token(end_of_text, 0.0, None, None), end_of_context=False) for _ in range(2)] == [False, True]


def test_a_longest_stop_string_that_the_text_keeps_almost_matching_is_held_back_then_found():
  """30,000 characters that keep almost matching 1,000-character stop strings, fed 10 at a time (the old
  check cost the square of the stop's length per token; this one steps each character once per stop
  string, plus fallbacks that the steps bound): nothing held back until the text could become one."""
  s = "a" * 999 + "b"
  watch = stops.Watch(stops.Stops([s, s[::-1], "ab" * 500, "x"]))
  text = ""
  for _ in range(3000):
    text += "a" * 9 + "c"
    cut, held = watch.update(text)
    assert cut is None and held == 0
  text += "a" * 999
  assert watch.update(text)[1] == 999  # all of it could still become `s`
  assert watch.update(text + "b")[0] == text[:-999]


def test_options_are_flags_with_their_declared_defaults_and_ranges():
  values = flags.FlagValues()
  fields = [f for f in options_lib.dataclasses.fields(options_lib.Options)]
  for f in fields:
    options_lib._DEFINE[f.type](f.name, [str(v) for v in f.default] if f.type is tuple else f.default,
                                f.metadata["meaning"], flag_values=values)
  values(["serve", "--model=m", "--slots=4", "--batch_sizes=1,2"])
  o = options_lib.from_flags(values)
  assert (o.slots, o.batch_sizes, o.max_queue, o.name) == (4, (1, 2), 256, "m")
  with pytest.raises(errors.UserError, match="--slots must be >= 1, got 0"):
    options_lib.Options(slots=0)
  with pytest.raises(errors.UserError, match="--lengths must be >= 1"):
    options_lib.Options(lengths=(16, 0))


V = 7  # the toy model's vocabulary


def toy_decoder(context, batch_sizes, lengths):
  """A language model whose next token is the sum of the row's tokens so far, mod V (greedy): its cache
  holds the tokens, so a step that saw a position it should not (another row's, or one past the row's
  end) draws a different token."""
  onehot = lambda t: 10.0 * (jnp.arange(V) == t[..., None] % V)

  def prefill(weights, ids_BxL):
    ids = jnp.maximum(ids_BxL, 0).astype(jnp.float32)
    return onehot(jnp.cumsum(ids, 1).astype(jnp.int32)), [ids[:, :, None, None]]

  def decode(weights, cache, token_B, position_B):
    (keys,) = cache
    B, L = keys.shape[:2]
    keys = keys.at[jnp.arange(B), position_B, 0, 0].set(token_B.astype(jnp.float32))
    seen = jnp.where(jnp.arange(L)[None] <= position_B[:, None], keys[:, :, 0, 0], 0.0)
    return onehot(seen.sum(1).astype(jnp.int32)), [keys]

  avals = (jnp.zeros((context, 1, 1), jnp.float32),)
  return decoding.Decoder(prefill, decode, [], avals, context, batch_sizes, lengths)


def toy_tokens(prompt, n):
  out = list(prompt)
  for _ in range(n):
    out.append(sum(out) % V)
  return out[len(prompt):]


def test_slots_bucket_each_step_by_the_rows_in_use_and_their_lengths_and_draw_the_same_tokens():
  slots = decoding.Slots(toy_decoder(32, (1, 2), (8, 16)), 4)
  assert slots.batch_sizes == [1, 2, 4] and slots.decoder.lengths == [8, 16, 32]
  assert slots.buckets()[:3] == [("start", 1, 8), ("step", 1, 8), ("start", 2, 8)]  # cheapest first
  ran, step = [], slots.decoder.step
  slots.decoder.step = lambda *args, length: (ran.append((len(args[2]), length)), step(*args, length=length))[1]
  prompts = {0: [1, 2, 3], 2: [4] * 9}
  drawn = {row: [slots.start(row, p, temperature=0.0, echo=False)[0].id] for row, p in prompts.items()}
  for _ in range(10):
    rows = sorted(drawn)
    for row, token in zip(rows, slots.step(rows)):
      drawn[row].append(token.id)
  # Row 2 in use: 3 rows (up to the next batch size, 4); its 10 + 9 positions: up to 16, then 32.
  assert ran[0] == (4, 16) and ran[-1] == (4, 32)
  for row, p in prompts.items():
    assert drawn[row] == toy_tokens(p, 11), row
  # Row 0 alone: one row, short.
  slots.reset()
  slots.start(0, [1], temperature=0.0, echo=False)
  slots.step([0])
  assert ran[-1] == (1, 8)


def test_prompts_prefilled_together_draw_what_each_alone_does_and_leave_other_rows_alone():
  slots = decoding.Slots(toy_decoder(32, (1, 2), (8, 16)), 4)
  ran, start = [], slots.decoder.start
  slots.decoder.start = lambda *args, echo: (ran.append(args[3].shape), start(*args, echo=echo))[1]
  drawn = {3: [slots.start(3, [5, 5], temperature=0.0, echo=False)[0].id]}  # a row that decodes meanwhile
  prompts = {0: [1, 2, 3], 1: [4] * 9, 2: [2, 6]}
  started = slots.start_all([decoding.Start(row, p, temperature=0.0) for row, p in prompts.items()])
  assert ran[1:] == [(2, 8), (1, 16)]  # the two short prompts in one call of 2 rows, the long one alone
  assert [len(prompt) for _, prompt in started] == [2, 8, 1]  # echo: each prompt's tokens after its first
  drawn.update({row: [first.id] for row, (first, _) in zip(prompts, started)})
  for _ in range(4):
    for row, token in zip(range(4), slots.step(list(range(4)))):
      drawn[row].append(token.id)
  for row, p in {**prompts, 3: [5, 5]}.items():
    assert drawn[row] == toy_tokens(p, 5), row
  # Once buckets are compiled ahead: three prompts in the one compiled call of 4 rows, padded with the first.
  slots.reset()
  slots.decoder.warming = True
  slots.decoder.compiled.update({(4, "start", 4, 16), (4, "step", 4, 32)})
  ran.clear()
  prompts = {0: [1, 2, 3], 1: [2, 6], 3: [3]}
  started = slots.start_all([decoding.Start(row, p, temperature=0.0) for row, p in prompts.items()], echo=False)
  assert ran == [(4, 16)]
  assert [first.id for first, _ in started] == [toy_tokens(p, 1)[0] for p in prompts.values()]
  assert [token.id for token in slots.step([0, 1, 2, 3])][:2] == [toy_tokens(p, 2)[1] for p in list(prompts.values())[:2]]


def test_once_buckets_are_compiled_ahead_a_step_runs_in_the_smallest_that_holds_it():
  slots = decoding.Slots(toy_decoder(32, (1, 2), (8, 16)), 4)
  slots.decoder.warming = True
  slots.decoder.compiled.update({(4, "step", 4, 16), (4, "step", 2, 32), (4, "start", 1, 32)})
  assert slots._compiled_bucket(("step", 1, 8)) == ("step", 4, 16)  # 64 row-positions, fewer than 2 x 32
  assert slots._compiled_bucket(("step", 2, 8)) == ("step", 4, 16)
  assert slots._compiled_bucket(("step", 1, 32)) == ("step", 2, 32)
  assert slots._compiled_bucket(("start", 1, 8)) == ("start", 1, 32)
  drawn = [slots.start(1, [3, 3], temperature=0.0, echo=False)[0].id]
  for _ in range(5):
    drawn.append(slots.step([1])[0].id)
  assert drawn == toy_tokens([3, 3], 6)
