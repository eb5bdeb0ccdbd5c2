"""Image files too large to hold in memory, decoded batch by batch by DataLoader workers
(`ImageStream`), in the same `epoch_order` and to the same pixels as the in-memory set, so
both train to the same weights; `should_stream` decides which a training run gets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dcl_core.config import DatasetSpec
from dcl_core.data.decode import CorruptImage, corrupt_error, decode_into, header_size, parallel_map
from dcl_core.data.imageset import epoch_order, load_files, sample_index
from dcl_core.data.tree import relative_name
from dcl_core.errors import UserError

IN_MEMORY_MAX_BYTES = 4 << 30
"""Auto mode: image files whose decoded uint8 size is over this stream from disk."""


class _ImageFiles(Dataset):
    """Decodes one image file per item, as `load_files` does. Item: ((3, S, S) uint8, problem),
    the problem "" or why the file cannot be read (the caller raises: an exception raised in a
    DataLoader worker would reach the user wrapped in a traceback)."""

    def __init__(self, paths: list[Path], base: Path, size: int, skip_corrupt: bool):
        # Decoding at the native size with size set gives the same pixels as without (a JPEG
        # draft at scale 1): any file of another size is resized, never left blank.
        self.paths, self.base, self.size, self.skip_corrupt = paths, base, size, skip_corrupt

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        # skip_corrupt: the next readable file stands in for an unreadable one, so that batches
        # keep their size (a CUDA-graph step needs fixed shapes).
        out = np.zeros((3, self.size, self.size), dtype=np.uint8)
        problem = ""
        for k in range(len(self.paths) if self.skip_corrupt else 1):
            path = self.paths[(index + k) % len(self.paths)]
            try:
                decode_into(path, out, self.size)
                return torch.from_numpy(out), ""
            except CorruptImage as exc:
                problem = f"{relative_name(path, self.base)} ({exc})"
        return torch.from_numpy(out), problem


@dataclass
class ImageStream:
    """Image files decoded batch by batch by DataLoader workers; labels (N,) int64 or None.

    Holds the file list only. With `spec.skip_corrupt`, a file found unreadable during training
    is replaced by the next readable one (the in-memory set drops it); without, it ends the run.
    A temporary extraction (`keep`) lives as long as the stream.
    """

    paths: list[Path]
    labels: torch.Tensor | None
    classes: list[str] | None
    source: str
    image_size: int
    root: Path
    spec: DatasetSpec
    keep: ExitStack

    @property
    def num_images(self) -> int:
        return len(self.paths)

    def channel_stats(self, max_images: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) in [0, 1] units, decoding the same evenly spaced files that
        `ImageSet.channel_stats` measures (so both modes normalise alike)."""
        sample = [self.paths[i] for i in sample_index(self.num_images, max_images).tolist()]
        images = load_files(sample, None, None, self.root, self.spec, self.source)
        return images.channel_stats(max_images=max_images)

    def batches(self, epoch: int, seed: int, batch_size: int, *, skip: int = 0, rank: int = 0, world: int = 1,
                num_workers: int = 0, pin_memory: bool = False) -> Iterator[torch.Tensor]:
        """The epoch's batches in `epoch_order`, from batch `skip` on (an exact resume), the last
        partial batch dropped; under DDP, rank's slice of each global batch.

        Shape: (batch_size // world, 3, S, S) uint8 on the CPU (pinned with pin_memory).
        """
        order = epoch_order(self.num_images, seed, epoch)
        local = batch_size // world
        starts = (i * batch_size + rank * local for i in range(skip, self.num_images // batch_size))
        index = [order[start:start + local].tolist() for start in starts]
        files = _ImageFiles(self.paths, self.root, self.image_size, self.spec.skip_corrupt)
        loader = DataLoader(files, batch_sampler=index, num_workers=num_workers, pin_memory=pin_memory)
        for images, problems in loader:
            bad = [p for p in problems if p]
            if bad and self.spec.skip_corrupt:
                raise UserError(f"{self.source}: none of the {self.num_images} image files can be read")
            if bad:
                raise corrupt_error(bad, len(bad))
            yield images


def should_stream(in_memory: bool | None, num_images: int, image_size: int,
                  max_bytes: int = IN_MEMORY_MAX_BYTES) -> bool:
    """Whether training streams image files: as `in_memory` says, else (None) when their decoded
    uint8 size N*3*S*S bytes is over max_bytes."""
    if in_memory is not None:
        return not in_memory
    return num_images * 3 * image_size * image_size > max_bytes


def first_side(paths: list[Path]) -> int:
    """The width of the first file with a readable header; 0 when there is none (loading it
    in memory then reports the unreadable files)."""
    for path in paths:
        try:
            return header_size(path)[0]
        except CorruptImage:
            continue
    return 0


def open_stream(paths: list[Path], labels: list[int] | None, classes: list[str] | None,
                 root: Path, spec: DatasetSpec, keep: ExitStack) -> ImageStream:
    """An ImageStream over the files. Without spec.image_size every header is read first (not
    the pixels): a stream needs one square size, and a mixed folder should fail now, not hours in."""
    side = spec.image_size
    if side is None:
        def probe(i: int) -> tuple[int, int] | str:
            try:
                return header_size(paths[i])
            except CorruptImage as exc:
                return f"{relative_name(paths[i], root)} ({exc})"

        results = parallel_map(probe, len(paths))
        corrupt = [r for r in results if isinstance(r, str)]
        if corrupt and not spec.skip_corrupt:
            raise corrupt_error(corrupt, len(corrupt))
        good = [i for i, r in enumerate(results) if not isinstance(r, str)]
        if not good:
            raise UserError(f"{spec.source}: none of the {len(paths)} image files can be read")
        first = relative_name(paths[good[0]], root)
        w, h = results[good[0]]
        if w != h:
            raise UserError(f"{spec.source}: images are {w}x{h} ({first}), not square; set image_size")
        other = [i for i in good if results[i] != (w, h)]
        if other:
            i = other[0]
            raise UserError(
                f"{spec.source}: images have different sizes ({first} is {w}x{h}, "
                f"{relative_name(paths[i], root)} is {results[i][0]}x{results[i][1]}, {len(other)} differ); "
                "streaming needs one size: set image_size"
            )
        paths = [paths[i] for i in good]
        labels = [labels[i] for i in good] if labels is not None else None
        side = w
    y = torch.tensor(labels, dtype=torch.int64) if labels is not None else None
    return ImageStream(paths=paths, labels=y, classes=classes, source=spec.source, image_size=side,
                       root=root, spec=spec, keep=keep)
