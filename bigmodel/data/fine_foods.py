"""Amazon fine food reviews offline, from Debian's `r-cran-modeldata`.

modeldata's `small_fine_foods` (a sample of McAuley & Leskovec's Amazon reviews): 4,000 train and
1,000 test reviews, each (product, review, score); score is "great" for a 5-star rating, else
"other" (the package's documentation), 65 % "great" in both splits. Labels here:
0 = "other", 1 = "great" (`CLASSES`), so 1 is the positive class for a one-output sigmoid.

R is not needed: the package keeps its data in R's lazy-load database, read by rdata.py.
"""
import os

from bigmodel import errors
from bigmodel.data import files, rdata, text
from bigmodel.data.dataset import Dataset, register

DIR = "/usr/lib/R/site-library/modeldata/data"
CLASSES = ["other", "great"]
INSTALL = "apt-get install -y --no-install-recommends r-cran-modeldata"


def load(directory: str = DIR) -> dict:
  """{"train": Labelled (4,000), "test": Labelled (1,000)}: review texts as stored (with their
  `<br />` tags), labels 0 = "other", 1 = "great"."""
  if not os.path.exists(os.path.join(directory, "Rdata.rdb")):
    raise errors.NotFound(f"modeldata's data not found in {directory}/ (Rdata.rdb). "
                          f"Install it with: {INSTALL}")
  splits = {}
  for split, name in (("train", "training_data"), ("test", "testing_data")):
    table = rdata.columns(rdata.read_lazyload(directory, name))
    splits[split] = files.Labelled(texts=table["review"], labels=files.label_ids(table["score"], CLASSES, name),
                                   classes=list(CLASSES))
  return splits


@register("fine_foods")
def load_fine_foods(c) -> Dataset:
  """The labelled reviews: "great" or "other"."""
  return text.labelled(c, load())


@register("fine_foods_text")
def load_fine_foods_text(c) -> Dataset:
  """LM pretraining text: the training reviews only, so the test reviews stay unseen."""
  reviews = "\n\n".join(load()["train"].texts) + "\n\n"
  return text.corpus(c, dict(zip(("train", "val"), files.split_text(reviews, c.val_fraction))))
