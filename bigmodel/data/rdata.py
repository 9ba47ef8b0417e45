"""R's lazy-load databases read in pure Python (no R needed): what R packages keep their data in.

A package's `data/Rdata.rdx` is the index (a gzipped RDS file) and `Rdata.rdb` holds the blobs;
each blob is a 4-byte big-endian length, a 1-byte compression type ('Z' xz, '2' bzip2, '1' zlib,
'0' none) and R's XDR serialization. `unserialize` decodes the types data frames are made of
(and every dataset in modeldata 1.1.0).
"""
import bz2
import gzip
import lzma
import os
import struct
import zlib

import numpy as np

from bigmodel import errors

# R's serialization (R Internals, "Serialization Formats"): an int of flags per object,
# its type in the low byte; vectors are a length then the elements; attributes follow as a pairlist.
NILVALUE, REF, SYM, LIST, CHAR, LGL, INT, REAL, STR, VEC = 254, 255, 1, 2, 9, 10, 13, 14, 16, 19
HAS_ATTR, HAS_TAG, LATIN1 = 1 << 9, 1 << 10, 1 << 14
NA_INT = -(2 ** 31)


class _Reader:
  """Decodes R's XDR serialization into (value, attributes) pairs: vectors as numpy arrays or lists
  (strings, NA as None), pairlists as dicts, symbols as str."""

  def __init__(self, data: bytes):
    if data[:2] != b"X\n":
      raise errors.UserError(f"Not R's XDR serialization (starts {data[:2]!r}, expected b'X\\n').")
    self.data, self.pos, self.refs = data, 2, []
    version = self.int()
    self.pos += 8  # R version that wrote it, oldest R that reads it
    if version == 3:
      name_length = self.int()
      self.pos += name_length  # native encoding's name

  def int(self):
    (value,) = struct.unpack_from(">i", self.data, self.pos)
    self.pos += 4
    return value

  def array(self, dtype, n):
    out = np.frombuffer(self.data, dtype, n, self.pos)
    self.pos += out.nbytes
    return out

  def length(self):
    n = self.int()
    return n if n != -1 else (self.int() << 32) + self.int()  # long vectors

  def item(self):
    flags = self.int()
    kind = flags & 0xFF
    if kind == NILVALUE:
      return None, {}
    if kind == REF:  # a symbol seen before: its index is in the flags, or in the next int if too big
      return self.refs[(flags >> 8) - 1 if flags >> 8 else self.int() - 1], {}
    if kind == SYM:
      name, _ = self.item()
      self.refs.append(name)
      return name, {}
    if kind == LIST:  # pairlist: attributes, tag, head, then the rest of the list
      attrs = self.attributes() if flags & HAS_ATTR else {}
      tag = self.item()[0] if flags & HAS_TAG else None
      value, rest = self.item(), self.item()[0] or {}
      return {tag: value, **rest}, attrs
    if kind == CHAR:
      n = self.int()
      if n == -1:
        return None, {}  # NA_character_
      self.pos += n
      return self.data[self.pos - n:self.pos].decode("latin-1" if flags & LATIN1 else "utf-8"), {}
    if kind in (LGL, INT):
      value = self.array(">i4", self.length()).astype(np.int32)
    elif kind == REAL:
      value = self.array(">f8", self.length()).astype(np.float64)
    elif kind == STR:
      value = [self.item()[0] for _ in range(self.length())]
    elif kind == VEC:
      value = [self.item() for _ in range(self.length())]
    else:
      raise errors.UserError(f"R object type {kind} (SEXPTYPE) at byte {self.pos - 4} is not supported: this reader "
                             "handles the vectors, lists and attributes that data frames are made of.")
    return value, self.attributes() if flags & HAS_ATTR else {}

  def attributes(self):
    return self.item()[0]


def unserialize(data: bytes):
  """One R object from its XDR serialization, as (value, attributes); see `_Reader`."""
  return _Reader(data).item()


def read_lazyload(directory: str, name: str):
  """Object `name` from the R lazy-load database `directory/Rdata.{rdx,rdb}`, as (value, attributes)."""
  with open(os.path.join(directory, "Rdata.rdx"), "rb") as f:
    index = named(unserialize(gzip.decompress(f.read())))  # list(variables, references, compressed)
  compressed = int(index["compressed"][0][0])
  variables = named(index["variables"])  # name -> c(offset, length) into Rdata.rdb
  if name not in variables:
    raise errors.UserError(f"{name!r} is not in {directory}/Rdata.rdx. It holds: {', '.join(sorted(variables))}.")
  start, size = (int(x) for x in variables[name][0])
  with open(os.path.join(directory, "Rdata.rdb"), "rb") as f:
    f.seek(start)
    blob = f.read(size)
  return unserialize(_decompress(blob, compressed))


def named(obj) -> dict:
  """An R named list as {name: (value, attributes)}."""
  value, attrs = obj
  return dict(zip(attrs["names"][0], value))


def columns(obj) -> dict:
  """An R data frame (or tibble) as {column: numpy array or list}, factors as their level strings."""
  out = {}
  for name, (value, attrs) in named(obj).items():
    if "levels" in attrs:  # a factor: 1-based codes into its levels, NA_INT for NA
      levels = attrs["levels"][0]
      value = [levels[c - 1] if c != NA_INT else None for c in value.tolist()]
    out[name] = value
  return out


def _decompress(blob: bytes, compressed: int) -> bytes:
  """A blob: its length (4 bytes, big-endian), then zlib if `compressed` is 1, else a type byte and
  the data ('Z' raw LZMA2, '2' bzip2, '1' zlib, '0' stored), as R's R_decompress1/2/3 read them."""
  (size,), kind, body = struct.unpack(">I", blob[:4]), blob[4:5], blob[5:]
  if compressed == 1:
    out = zlib.decompress(blob[4:])
  elif kind == b"Z":  # R writes raw LZMA2 at preset 9e, not an .xz container
    out = lzma.decompress(body, lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}])
  elif kind == b"2":
    out = bz2.decompress(body)
  elif kind == b"1":
    out = zlib.decompress(body)
  elif kind == b"0":
    out = body
  else:
    raise errors.UserError(f"Unknown compression type {kind!r} in an R lazy-load blob (compressed={compressed}).")
  if len(out) != size:
    raise errors.UserError(f"Lazy-load blob decompressed to {len(out)} bytes, its header says {size}.")
  return out
