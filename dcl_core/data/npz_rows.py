"""A few rows of an array inside an .npz, read without holding the array or its prefix.

A stored (uncompressed) member is seeked into on the raw file; a compressed one is
decompressed forward in `CHUNK` pieces that are thrown away until the next wanted row. An
image row wider than `max_side` is read one image line at a time and thinned (every k-th
line and column), so even one 9000x9000 image never sits whole in memory.
Standard library and numpy only (the API reads previews with it; so does `dcl show-augment`).
"""

from __future__ import annotations

import math
import struct
import zipfile
from collections.abc import Iterable
from typing import IO

import numpy as np

from dcl_core.errors import UserError

CHUNK = 1 << 20
"""Bytes decompressed (and dropped) at a time while skipping to the next wanted row."""

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length


class _Member:
    """An .npy member opened for forward reads at known byte offsets."""

    def __init__(self, archive: zipfile.ZipFile, key: str):
        name = f"{key}.npy"
        try:
            info = archive.getinfo(name)
        except KeyError:
            raise UserError(f"the .npz has no array `{key}`") from None
        self.stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
        if self.stored:  # read the raw file: seeks cost nothing
            raw = archive.fp
            raw.seek(info.header_offset)
            signature, name_len, extra_len = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            if signature != b"PK\x03\x04":
                raise UserError(f"the .npz's member {name} is damaged")
            self.base = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            self.stream: IO[bytes] = raw
            raw.seek(self.base)
        else:
            self.base = 0
            self.stream = archive.open(info)
        self.pos = 0
        version = np.lib.format.read_magic(self.stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(self.stream)
        if fortran or dtype.hasobject or not shape:
            raise UserError(f"the .npz's `{key}` is not a C-ordered array of numbers or strings")
        self.shape, self.dtype = tuple(int(d) for d in shape), dtype
        self.pos = self.stream.tell() - self.base
        self.data_start = self.pos

    def read_at(self, offset: int, size: int) -> bytes:
        """`size` bytes at `offset` past the .npy header; offsets only grow."""
        target = self.data_start + offset
        if self.stored:
            self.stream.seek(self.base + target)
        else:
            while self.pos < target:
                skipped = len(self.stream.read(min(CHUNK, target - self.pos)))
                if not skipped:
                    break
                self.pos += skipped
        data = self.stream.read(size)
        self.pos = target + len(data)
        if len(data) != size:
            raise UserError("the .npz is truncated: an array holds fewer bytes than its header says")
        return data

    def close(self) -> None:
        if not self.stored:
            self.stream.close()


def array_shape(archive: zipfile.ZipFile, key: str) -> tuple[int, ...]:
    """The shape the member's .npy header gives."""
    member = _Member(archive, key)
    member.close()
    return member.shape


def read_rows(archive: zipfile.ZipFile, key: str, indices: Iterable[int],
              max_side: int | None = None) -> tuple[list[int], np.ndarray]:
    """(the rows read, sorted, those past the end left out; their array). With `max_side`, rows
    of images (N, H, W[, C]) larger than it are thinned to at most about max_side a side."""
    member = _Member(archive, key)
    try:
        n, row_shape = member.shape[0], member.shape[1:]
        wanted = sorted({int(i) for i in indices if 0 <= int(i) < n})
        row_bytes = math.prod(row_shape) * member.dtype.itemsize
        step = 1
        if max_side is not None and len(row_shape) >= 2 and max(row_shape[:2]) > max_side:
            step = math.ceil(max(row_shape[:2]) / max_side)
        if step == 1:
            rows = np.empty((len(wanted), *row_shape), member.dtype)
            for k, index in enumerate(wanted):
                rows[k] = np.frombuffer(member.read_at(index * row_bytes, row_bytes), member.dtype).reshape(row_shape)
            return wanted, rows
        h, w, rest = row_shape[0], row_shape[1], row_shape[2:]
        line_bytes = row_bytes // h
        rows = np.empty((len(wanted), len(range(0, h, step)), len(range(0, w, step)), *rest), member.dtype)
        for k, index in enumerate(wanted):
            for j, line in enumerate(range(0, h, step)):
                data = member.read_at(index * row_bytes + line * line_bytes, line_bytes)
                rows[k, j] = np.frombuffer(data, member.dtype).reshape((w, *rest))[::step]
        return wanted, rows
    finally:
        member.close()
