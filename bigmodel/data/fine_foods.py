"""Amazon fine food reviews offline, from Debian's `r-cran-modeldata`.

modeldata's `small_fine_foods` (a sample of McAuley & Leskovec's Amazon reviews): 4,000 train and
1,000 test reviews, each (product, review, score); score is "great" for a 5-star rating, else
"other" (the package's documentation), 65 % "great" in both splits. Labels here:
0 = "other", 1 = "great" (`CLASSES`), so 1 is the positive class for a one-output sigmoid.

R is not needed: the package keeps its data in R's lazy-load database, read by rdata.py.
"""
import os

from bigmodel import errors
from bigmodel.data import files, rdata

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
