"""Tokenizers: exact round trips, save/load, clear errors; on the Shakespeare corpus."""
import numpy as np
import pytest

from bigmodel import tokenizers
from bigmodel.data import shakespeare

# Letters, accents, combining marks, CJK, emoji (4-byte UTF-8), controls, NUL, U+FFFF.
UNICODE = "Héllo, wörld! naïve ñ e\u0301 日本語 한국어 Ελληνικά 🤖🎭 \t\r\n\x00 \uffff end"


@pytest.fixture(scope="module")
def corpus():
  return shakespeare.load()


@pytest.fixture(scope="module")
def bpe(corpus):
  # The first 300k characters (comedies) leave out characters of later plays, e.g. Edward III's "—".
  return tokenizers.build("bpe", corpus["train"][:300_000], vocab_size=512)


def test_byte_tokenizer_round_trips_any_unicode():
  rng = np.random.default_rng(0)
  codepoints = rng.integers(0, 0x110000, 2000)
  codepoints = codepoints[(codepoints < 0xD800) | (codepoints > 0xDFFF)]  # surrogates are not text
  text = UNICODE + "".join(map(chr, codepoints))
  tok = tokenizers.build("byte")
  ids_N = tok.encode(text)
  assert ids_N.dtype == np.int32 and ids_N.max() < tok.vocab_size == 256
  assert len(ids_N) == len(text.encode("utf-8"))
  assert tok.decode(ids_N) == text


def test_byte_decode_of_a_cut_character_gives_a_replacement_not_an_error():
  ids_N = tokenizers.build("byte").encode("🤖")  # 4 bytes
  assert tokenizers.build("byte").decode(ids_N[:2]) == "\ufffd"


def test_char_vocab_is_the_sorted_distinct_characters_and_round_trips_the_corpus(corpus):
  text = corpus["train"] + corpus["val"]
  tok = tokenizers.build("char", text)
  assert tok.chars == "".join(sorted(set(text))) and tok.vocab_size == len(set(text))
  ids_N = tok.encode(text)
  assert ids_N.dtype == np.int32 and len(ids_N) == len(text)
  assert tok.decode(ids_N) == text
  assert tok.encode("a")[0] < tok.encode("b")[0]  # ids follow character order


def test_char_tokenizer_names_the_unknown_character_and_the_fix():
  tok = tokenizers.build("char", "abc ")
  with pytest.raises(ValueError, match=r"'é' \(U\+00E9\) at position 3 .*'byte' tokenizer"):
    tok.encode("ab é")


def test_bpe_round_trips_the_corpus_including_characters_it_never_saw(corpus, bpe):
  text = corpus["train"] + corpus["val"]
  assert set(text) - set(corpus["train"][:300_000])  # so byte fallback is exercised
  ids_N = bpe.encode(text)
  assert ids_N.dtype == np.int32 and ids_N.max() < bpe.vocab_size == 512
  assert bpe.decode(ids_N) == text
  assert bpe.decode(bpe.encode(UNICODE)) == UNICODE


def test_bpe_needs_fewer_tokens_than_characters_on_held_out_text(corpus, bpe):
  assert len(bpe.encode(corpus["val"])) < 0.6 * len(corpus["val"])


def test_bpe_encodes_line_by_line_as_sentencepiece_encodes_the_whole_text(corpus, bpe):
  text = corpus["val"][:50_000]
  assert bpe.encode(text).tolist() == bpe.sp.encode(text)


def test_bpe_training_is_deterministic(corpus, bpe):
  again = tokenizers.build("bpe", corpus["train"][:300_000], vocab_size=512)
  assert again.model_proto == bpe.model_proto


@pytest.mark.parametrize("name", list(tokenizers.TOKENIZERS))
def test_saved_and_loaded_tokenizer_encodes_identically(name, corpus, bpe, tmp_path):
  tok = bpe if name == "bpe" else tokenizers.build(name, corpus["train"])
  tok.save(tmp_path)
  loaded = tokenizers.load(tmp_path)
  assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
  text = corpus["val"][:20_000]
  np.testing.assert_array_equal(loaded.encode(text), tok.encode(text))
  assert loaded.decode(tok.encode(text)) == text


def test_load_from_an_empty_directory_says_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer.json missing"):
    tokenizers.load(tmp_path)


def test_unknown_tokenizer_name_lists_the_known_ones():
  with pytest.raises(ValueError, match="Unknown tokenizer 'wordpiece'. Known: byte, char, bpe."):
    tokenizers.build("wordpiece", "text")


def test_bpe_vocab_too_small_for_the_text_says_the_minimum():
  with pytest.raises(ValueError, match=r"vocab_size=100 is too small .* Use vocab_size >= \d+"):
    tokenizers.build("bpe", "To be, or not to be: that is the question.\n" * 50, vocab_size=100)


def test_decode_rejects_ids_outside_the_vocabulary():
  with pytest.raises(ValueError, match=r"Ids must be in \[0, 255\]"):
    tokenizers.build("byte").decode([72, 256])
  with pytest.raises(ValueError, match=r"Ids must be in \[0, 2\]"):
    tokenizers.build("char", "abc").decode([-1])
