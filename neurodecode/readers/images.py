"""Finding THINGS images on disk: concept folders of image files, in the order data sets use.

THINGS-derived data sets (THINGS-EEG2, THINGS-MEG, ...) distribute their images as one folder per
concept, named ``<index>_<concept>`` (THINGS-EEG2: ``training_images/00001_aardvark/aardvark_01b.jpg``)
or just ``<concept>`` (the THINGS database: ``object_images/aardvark/aardvark_01b.jpg``). Their
condition order is *sorted folders, then sorted files within each folder*. This module lists such
folders in that order and builds the stimulus table from them, for any reader.

Main entry points:

* :func:`concept_from_folder` -- ``"00001_aardvark"`` -> ``"aardvark"``;
* :func:`list_concept_images` -- ``[(concept, path), ...]`` in condition order;
* :func:`find_image_folders` -- locate folders such as ``training_images`` and ``test_images``
  under a root (directly or one level down) or under an explicit ``--images`` folder;
* :func:`image_stimulus_table` -- a :class:`~neurodecode.io.store.StimulusTable` from lists of
  images per split, with the image file stem as stimulus id;
* :func:`category_images` -- the image folder of each category of a category-level data set
  (CSV recordings, block-design fMRI), from a folder per category or a flat folder of files
  named after their category.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from neurodecode.io.store import StimulusTable
from neurodecode.utils import PathLike, UserError, logger

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderError",
    "category_images",
    "concept_from_folder",
    "find_image_folders",
    "image_stimulus_table",
    "list_concept_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# where image folders are looked for under a data root: the root itself, then these sub-folders
IMAGE_SUBFOLDERS = ("images_set", "image_set", "images", "Image_set")


class ImageFolderError(FileNotFoundError):
    """An image folder that is missing or does not hold what the data set needs."""


def concept_from_folder(name: str) -> str:
    """The concept of a THINGS image folder: the name after the first ``_`` if it starts with digits.

    ``"00001_aardvark"`` -> ``"aardvark"``, ``"00002_air_conditioner"`` -> ``"air_conditioner"``,
    ``"aardvark"`` -> ``"aardvark"``.
    """
    head, sep, tail = name.partition("_")
    return tail if sep and head.isdigit() and tail else name


def _is_image(p: Path, extensions: Sequence[str]) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions


def list_concept_images(folder: PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                        per_concept: int | None = None) -> list[tuple[str, Path]]:
    """List the images of a concept-folder tree in condition order.

    Parameters
    ----------
    folder : path-like
        Folder of concept folders (e.g. ``training_images``).
    extensions : sequence of str
        Image file suffixes (lower case) to include; hidden files are skipped.
    per_concept : int | None
        If given, every concept folder must hold exactly this many images (the error lists the
        folders that do not).

    Returns
    -------
    images : list of (concept, path)
        Sorted by folder name, then by file name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"{folder}: image folder not found.")
    concepts = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not concepts:
        raise ImageFolderError(f"{folder}: holds no concept folders (expected e.g. 00001_aardvark/).")
    out: list[tuple[str, Path]] = []
    wrong: list[str] = []
    for c in concepts:
        files = sorted(p for p in c.iterdir() if _is_image(p, extensions))
        if per_concept is not None and len(files) != per_concept:
            wrong.append(f"{c.name} ({len(files)})")
        concept = concept_from_folder(c.name)
        out.extend((concept, f) for f in files)
    if wrong:
        raise ImageFolderError(f"{folder}: {len(wrong)} concept folder(s) do not hold {per_concept} image(s): "
                               f"{', '.join(wrong[:10])}{' ...' if len(wrong) > 10 else ''}.")
    return out


def find_image_folders(root: PathLike | None, names: Sequence[str], *, images: PathLike | None = None,
                       subfolders: Sequence[str] = IMAGE_SUBFOLDERS, hint: str = "") -> dict[str, Path]:
    """Locate image folders (e.g. ``training_images`` and ``test_images``).

    They are looked for in ``images`` when given (directly or one level down), else in ``root``
    directly and then in each of ``root/<subfolder>``; the first place that holds *all* of
    ``names`` wins.

    Parameters
    ----------
    root : path-like | None
        The data set's root folder.
    names : sequence of str
        Folder names that must all be present.
    images : path-like | None
        An explicit folder (``--images``).
    subfolders : sequence of str
        Sub-folders of ``root`` (or of ``images``) also searched.
    hint : str
        Where to get the images, appended to the error message.

    Returns
    -------
    folders : dict
        ``name -> path`` for each of ``names``.
    """
    base = Path(images) if images is not None else (Path(root) if root is not None else None)
    if base is None:
        raise ValueError("Give the data root or an image folder.")
    candidates = [base] + [base / s for s in subfolders]
    if images is not None:
        candidates += sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    for cand in candidates:
        if all((cand / n).is_dir() for n in names):
            return {n: cand / n for n in names}
    where = ", ".join(str(c) for c in [base] + [base / s for s in subfolders])
    msg = f"image folders {list(names)} not found in any of: {where}."
    msg += " Pass the folder that holds them with --images DIR." if images is None else ""
    if hint:
        msg += f" {hint}"
    raise ImageFolderError(msg)


def image_stimulus_table(splits: Mapping[str, Sequence[tuple[str, Path]]], *,
                         root: PathLike | None = None) -> StimulusTable:
    """A stimulus table from images per split; the stimulus id is the image file stem.

    Parameters
    ----------
    splits : mapping
        ``split -> [(concept, path), ...]`` (e.g. from :func:`list_concept_images`), in order.
    root : path-like | None
        Folder that image paths are stored relative to (absolute paths otherwise).

    Returns
    -------
    table : StimulusTable
        Rows in the order of ``splits`` and of each list.
    """
    ids: list[str] = []
    concepts: list[str] = []
    paths: list[str] = []
    split_col: list[str] = []
    for split, items in splits.items():
        for concept, path in items:
            ids.append(Path(path).stem)
            concepts.append(concept)
            paths.append(str(Path(path).resolve()))
            split_col.append(split)
    return StimulusTable(ids, concepts, paths, split_col, root=root)


# --------------------------------------------------------------------------------------------------
# category-level stimuli: one image folder per category
# --------------------------------------------------------------------------------------------------
CATEGORY_LAYOUTS = ("a folder per category (DIR/face/, DIR/faces/ or DIR/facees/), or image files in DIR named after "
                    "their category: the file name starts with the category (or its plural) followed by '-', '_', a "
                    "space or a digit (DIR/face-001.jpg, DIR/faces_2.png, DIR/face 3.jpg)")


def _category_forms(name: str) -> list[str]:
    return [name, name + "s", name + "es"]


def _flat_matches(folder: Path, names: Sequence[str]) -> dict[str, list[Path]]:
    """Image files directly in ``folder`` by category, matched on the file-name prefix (the longest
    category name that matches wins, so ``nontarget-1.jpg`` is not a ``target``)."""
    forms = sorted(((f.lower(), n) for n in names for f in _category_forms(n)), key=lambda x: -len(x[0]))
    out: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if not _is_image(p, IMAGE_EXTENSIONS):
            continue
        stem = p.stem.lower()
        for form, name in forms:
            if stem.startswith(form) and re.match(r"[-_ 0-9]", stem[len(form):]):
                out.setdefault(name, []).append(p)
                break
    return out


def _describe(folder: Path) -> str:
    if not folder.is_dir():
        return f"{folder} does not exist"
    items = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    if not items:
        return f"the folder {folder} is empty"
    return f"{folder} holds {len(items)} item(s): {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"


def category_images(categories: Sequence[str], images: PathLike | None, *, out: PathLike,
                    explicit: Mapping[str, PathLike] | None = None, required: bool = True) -> list[str]:
    """The image folder of each category (``""`` when the data set has no images).

    Two layouts are accepted in ``images``: a folder per category (``faces/``), or a flat folder
    of files whose names start with their category (``target-001.jpg``, ``nontarget_2.png``; see
    ``CATEGORY_LAYOUTS``). Flat files are copied into ``out/images/<category>/`` so that each
    category has a folder (whose teacher embedding is the mean of its images).

    Parameters
    ----------
    categories : sequence of str
        The category names.
    images : path-like | None
        The image folder; ``None``: no images (every path is ``""``).
    out : path-like
        The prepared folder (flat files are copied under ``out/images``).
    explicit : mapping | None
        ``category -> folder`` given by the user (``--image-folders``), relative to ``images``
        when not found as given.
    required : bool
        ``True`` (``--images`` given): every category must have images, else a
        :class:`~neurodecode.utils.UserError` says what was found. ``False`` (a default folder
        such as ``ROOT/stimuli``): no images at all is accepted (``""`` for every category), but
        some categories with images and others without is still an error.

    Returns
    -------
    folders : list of str
        Absolute folder per category, ``""`` for none.
    """
    explicit = dict(explicit or {})
    if images is None and not explicit:
        return [""] * len(categories)
    base = Path(images) if images is not None else None
    if base is not None and base.exists() and not base.is_dir():
        raise UserError(f"--images {base} is a file, not a folder: give the folder holding {CATEGORY_LAYOUTS}.")
    found: dict[str, Path] = {}
    for c in categories:
        if c in explicit:
            p = Path(explicit[c])
            if not p.is_absolute() and not p.exists() and base is not None:
                p = base / p
            if not p.is_dir():
                raise UserError(f"--image-folders: the folder {p} given for category {c!r} does not exist.")
            found[c] = p
        elif base is not None and base.is_dir():
            hit = next((base / f for f in _category_forms(c) if (base / f).is_dir()), None)
            if hit is not None:
                found[c] = hit
    flat_src: dict[str, list[Path]] = {}
    if base is not None and base.is_dir():
        flat_src = _flat_matches(base, [c for c in categories if c not in found])
        for c, files in flat_src.items():
            dest = Path(out) / "images" / c
            dest.mkdir(parents=True, exist_ok=True)
            for f in files:
                target = dest / f.name
                if not (target.is_file() and target.stat().st_size == f.stat().st_size):
                    shutil.copy2(f, target)
            found[c] = dest
            logger.info(f"category {c!r}: {len(files)} image(s) matched by file name in {base}, copied to {dest}")
    missing = [c for c in categories if c not in found]
    if missing and (required or len(missing) < len(categories)):
        have = [c for c in categories if c in found]
        raise UserError(
            f"--images {base}: no images for categor{'y' if len(missing) == 1 else 'ies'} {missing}"
            + (f" (found for {have})" if have else "") + f"; {_describe(base) if base is not None else ''}. "
            f"Expected {CATEGORY_LAYOUTS}. Rename the files or folders, map a category to a folder with "
            f"--image-folders NAME=DIR, or leave out --images to prepare without images (decoding targets are then "
            f"made from the category names).")
    for c, p in found.items():
        if c not in flat_src and not any(_is_image(q, IMAGE_EXTENSIONS) for q in p.rglob("*")):
            logger.warning(f"the image folder {p} of category {c!r} holds no image file")
    return ["" if c not in found else str(found[c].resolve()) for c in categories]
