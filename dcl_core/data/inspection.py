"""What an upload holds: `inspect_images` lists and decodes every image of a tree,
`inspect_npz` checks an .npz; both give a `DatasetSummary`. Torch-free (the API runs them)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dcl_core.data.decode import MAX_LISTED, CorruptImage, corrupt_error, decode_image, parallel_map
from dcl_core.data.npz import MAX_CLASSES, check_npz
from dcl_core.data.tree import IMAGE_SUFFIXES, list_tree
from dcl_core.errors import UserError

SUMMARY_CLASS_CHARS = 32_000
SUMMARY_LISTED_FILES = 100
SUMMARY_LISTED_CHARS = 16_000
"""Bounds on a stored summary (see `DatasetSummary.to_dict`): every dataset listing returns it."""


@dataclass
class DatasetSummary:
    """What an upload holds. `sizes`: the most common (width, height, count); `corrupt`: the
    unreadable files (relative paths); `ignored`: files without an image suffix (first 100)."""

    num_images: int
    classes: list[str] | None
    class_counts: dict[str, int] | None
    sizes: list[tuple[int, int, int]]
    corrupt: list[str] = field(default_factory=list)
    labelled: bool = False
    ignored: list[str] = field(default_factory=list)
    format: str = "images"  # "images" or "npz"

    def to_dict(self) -> dict:
        """JSON-ready and bounded in size whatever the dataset holds: class names are listed
        while their total length stays under SUMMARY_CLASS_CHARS (`num_classes` says how many
        there are, `classes_truncated` whether some were left out); `corrupt` and `ignored`
        list at most SUMMARY_LISTED_FILES names (`num_corrupt` counts them all).
        In all under about 100 KB."""
        d = asdict(self)
        d["sizes"] = [{"width": w, "height": h, "count": c} for w, h, c in self.sizes]
        if self.classes is not None:
            kept, chars = [], 0
            for name in self.classes:
                chars += len(name) + 16  # the name twice (classes, class_counts) and a count
                if chars > SUMMARY_CLASS_CHARS:
                    break
                kept.append(name)
            d["classes"] = kept
            if self.class_counts is not None:
                d["class_counts"] = {name: self.class_counts[name] for name in kept if name in self.class_counts}
            d["num_classes"] = len(self.classes)
            d["classes_truncated"] = len(kept) < len(self.classes)
        d["num_corrupt"] = len(self.corrupt)
        d["corrupt"] = _first_names(self.corrupt)
        d["ignored"] = _first_names(self.ignored)
        return d


def _first_names(names: list[str]) -> list[str]:
    """At most SUMMARY_LISTED_FILES names, and fewer when long (SUMMARY_LISTED_CHARS in all)."""
    kept, chars = [], 0
    for name in names[:SUMMARY_LISTED_FILES]:
        chars += len(name)
        if chars > SUMMARY_LISTED_CHARS:
            break
        kept.append(name)
    return kept


def inspect_images(root: str | os.PathLike[str], *, skip_corrupt: bool) -> DatasetSummary:
    """Lists and decodes every image of a tree (see `list_images`); the summary of what it holds.

    Unreadable files are listed in `corrupt` (relative paths); without `skip_corrupt` any
    of them is a UserError naming them. No readable image at all is a UserError.
    """
    _, paths, labels, classes, ignored = list_tree(Path(root))
    base = Path(root)
    if classes is not None and len(classes) > MAX_CLASSES:
        raise UserError(f"{base.name or base} has {len(classes)} class folders, more than the limit of "
                        f"{MAX_CLASSES}; group the images into fewer classes")

    def rel(p: Path) -> str:
        return p.relative_to(base).as_posix()

    def probe(i: int) -> tuple[int, int] | str:
        try:
            im, size = decode_image(paths[i], draft_size=(1, 1))
            im.close()
            return size
        except CorruptImage as exc:
            return f"{rel(paths[i])} ({exc})"

    results = parallel_map(probe, len(paths))
    corrupt_idx = [i for i, r in enumerate(results) if isinstance(r, str)]
    corrupt_msgs = [results[i] for i in corrupt_idx]
    if corrupt_idx and not skip_corrupt:
        raise corrupt_error(corrupt_msgs, len(corrupt_idx))  # type: ignore[arg-type]
    good = [i for i, r in enumerate(results) if not isinstance(r, str)]
    if not good:
        found = f"; found {', '.join(rel(p) for p in ignored[:MAX_LISTED])}" if ignored else ""
        unreadable = f"; {len(corrupt_idx)} unreadable" if corrupt_idx else ""
        raise UserError(
            f"no images found in {base.name or base}{unreadable}{found}. Expected image files "
            f"({', '.join(sorted(set(IMAGE_SUFFIXES)))}) directly in the top folder or in class subfolders"
        )
    sizes = Counter(results[i] for i in good)
    class_counts = None
    if classes is not None and labels is not None:
        counts = Counter(labels[i] for i in good)
        class_counts = {c: counts.get(k, 0) for k, c in enumerate(classes)}
    return DatasetSummary(
        num_images=len(good),
        classes=classes,
        class_counts=class_counts,
        sizes=[(w, h, n) for (w, h), n in sizes.most_common(5)],  # type: ignore[misc]
        corrupt=[rel(paths[i]) for i in corrupt_idx],
        labelled=classes is not None,
        ignored=[rel(p) for p in ignored[:100]],
        format="images",
    )


def inspect_npz(
    path: str | os.PathLike[str],
    *,
    max_total_bytes: int | None = None,
    max_images: int | None = None,
    max_ratio: float | None = None,
    display_name: str | None = None,
) -> DatasetSummary:
    """Checks an .npz dataset with `dcl_core.data.npz.check_npz` (every member read through once, `x`
    never loaded; the caps as there) and summarises it."""
    contents = check_npz(path, max_total_bytes=max_total_bytes, max_images=max_images, max_ratio=max_ratio,
                         display_name=display_name)
    n, h, w = contents.shape[:3]
    class_counts = None
    if contents.labels is not None and contents.classes is not None:
        counts = np.bincount(contents.labels, minlength=len(contents.classes))
        class_counts = {c: int(counts[i]) for i, c in enumerate(contents.classes)}
    return DatasetSummary(
        num_images=n,
        classes=contents.classes,
        class_counts=class_counts,
        sizes=[(w, h, n)],
        labelled=contents.classes is not None,
        format="npz",
    )
