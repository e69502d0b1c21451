"""The stimuli to embed: stimulus tables, their image files, and a dataset of transformed images.

A stimulus's ``image_path`` (in :class:`~neurodecode.io.store.StimulusTable`) is an image file or a
*folder*. A folder stands for a category-level stimulus whose exact image was not logged (e.g. the
N170 face/house recordings, which say "a face" but not which face): its embedding, in every layer, is
the **mean of the raw embeddings of the image files directly inside the folder** (not in
sub-folders; files with the extensions in :data:`IMAGE_EXTENSIONS`, sorted by name). Folder images are
embedded together (in chunks of ``batch_size`` images), so a batch of ``batch_size`` stimuli may hold
more images than that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.io.store import STIMULI_FILENAME, StimulusTable, StoreError
from neurodecode.utils import PathLike

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(folder: PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (see :data:`IMAGE_EXTENSIONS`), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def stimuli_from_images(folder: PathLike) -> StimulusTable:
    """A stimulus table for a plain folder of images (searched recursively).

    Ids are the file stems (they must be unique), the concept is the name of the folder holding the
    image, the split is ``"train"`` and image paths are relative to ``folder``.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") or part.endswith(".parts")
                               for part in p.relative_to(folder).parts))
    if not files:
        raise StoreError(folder, None, f"holds no images ({', '.join(IMAGE_EXTENSIONS)}) and no {STIMULI_FILENAME}.",
                         "Pass a folder made by 'neurodecode prepare' or a folder of images.")
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise StoreError(folder, "stimulus_id",
                             f"two images share the id {p.stem!r}: {seen[p.stem]} and {p} (ids are file names "
                             f"without extension).",
                             f"Rename one of them, or describe the stimuli in a {STIMULI_FILENAME} table.")
        seen[p.stem] = p
    return StimulusTable(
        stimulus_id=[p.stem for p in files], concept=[p.parent.name for p in files],
        image_path=[p.relative_to(folder).as_posix() for p in files], split=["train"] * len(files), root=folder)


def load_stimuli(path: PathLike | StimulusTable) -> StimulusTable:
    """The stimuli of a prepared folder (its ``stimuli.tsv``), of a ``.tsv`` table, or of a folder of images."""
    if isinstance(path, StimulusTable):
        return path
    path = Path(path)
    if path.is_file():
        return StimulusTable.read_tsv(path)
    if (path / STIMULI_FILENAME).is_file():
        return StimulusTable.read_tsv(path / STIMULI_FILENAME)
    if path.is_dir():
        return stimuli_from_images(path)
    raise StoreError(path, None, "not found.", "Pass a prepared folder (with stimuli.tsv) or a folder of images.")


def _table_file(table: StimulusTable) -> Path | str | None:
    return (table.root / STIMULI_FILENAME) if table.root is not None else None


def stimulus_image_files(table: StimulusTable, rows: Sequence[int] | np.ndarray) -> list[list[Path]]:
    """The image files of each row (one file, or the images of a folder), checked to exist.

    Raises
    ------
    StoreError
        Listing every row (up to 10) whose image is unknown, missing or an empty folder.
    """
    out: list[list[Path]] = []
    problems: list[str] = []
    for i in rows:
        sid = table.stimulus_id[i]
        p = table.image_file(int(i))
        if p is None:
            problems.append(f"{sid!r}: no image_path")
            out.append([])
        elif p.is_dir():
            files = list_images(p)
            if not files:
                problems.append(f"{sid!r}: folder {p} holds no images")
            out.append(files)
        elif p.is_file():
            out.append([p])
        else:
            problems.append(f"{sid!r}: {p} not found")
            out.append([])
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise StoreError(_table_file(table), "image_path",
                         f"{len(problems)} stimulus image(s) cannot be read: " + "; ".join(problems[:10]) + more + ".",
                         "Fix the image paths of the stimulus table (relative to its folder) or restore the images.")
    return out


class StimulusImages:
    """Map-style dataset: item ``i`` is the transformed image(s) of one stimulus.

    Parameters
    ----------
    ids : sequence of str
        Stimulus ids.
    files : sequence of list of Path
        Image files of each stimulus (several for a folder stimulus).
    transform : callable
        PIL image -> tensor ``(3, H, W)``.
    """

    def __init__(self, ids: Sequence[str], files: Sequence[Sequence[Path]], transform: Any) -> None:
        if len(ids) != len(files):
            raise ValueError(f"{len(ids)} ids for {len(files)} file lists")
        self.ids = [str(i) for i in ids]
        self.files = [list(f) for f in files]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_images(self) -> int:
        """Total number of image files."""
        return sum(len(f) for f in self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch
        from PIL import Image

        tensors = []
        for p in self.files[i]:
            try:
                with Image.open(p) as im:
                    tensors.append(self.transform(im.convert("RGB")))
            except (OSError, ValueError) as err:
                raise StoreError(p, "image", f"cannot be read as an image ({err}).",
                                 "Replace or remove the file.") from None
        return {"stimulus_id": self.ids[i], "images": torch.stack(tensors)}


def collate_stimuli(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch stimuli: ids (list), images concatenated ``(n_images, 3, H, W)``, ``counts`` per stimulus."""
    import torch

    return {
        "stimulus_id": [it["stimulus_id"] for it in items],
        "images": torch.cat([it["images"] for it in items]),
        "counts": torch.tensor([len(it["images"]) for it in items], dtype=torch.long),
    }


__all__ = ["IMAGE_EXTENSIONS", "StimulusImages", "collate_stimuli", "list_images", "load_stimuli",
           "stimuli_from_images", "stimulus_image_files"]
