"""Find reconstructions and ground-truth images on disk and match them by stimulus id.

Reconstruction metrics compare each reconstruction with the image that was seen; pairing them by
file order (sorted names, directory listing order) silently scores the wrong pairs when one file is
missing or names sort differently. Here every file is matched by its *stimulus id*:

- ground truth: ``<truth>/<id>.png`` (or ``.jpg``, ``.jpeg``, ...), one image per id, directly in
  the folder;
- reconstructions, any of
  ``<pred>/<id>.png`` (one sample), ``<pred>/<id>_<k>.png`` (sample ``k``, an integer) or
  ``<pred>/<id>/<k>.png`` (the layout ``neurodecode reconstruct`` writes).

A name is read as ``<id>`` when it is a ground-truth id, otherwise as ``<id>_<k>`` when the part
before the last ``_`` is a ground-truth id and the rest an integer (an id that itself ends in
``_<digits>`` wins over that reading). Samples of a stimulus are ordered by ``k`` (as integers, so
``10`` comes after ``9``); ``<id>.png`` is sample 0. Every stimulus must have the same set of
sample numbers: round ``k`` of the metrics is sample ``k`` of every stimulus.

Errors (:class:`~neurodecode.utils.UserError`, naming the file or the ids): an image that matches no
ground truth, a ground truth without reconstruction (unless ``truth_superset=True``), two files for
one sample, unequal sample sets, an unreadable image, an empty folder. Files that are not images
(other extensions, hidden files) are ignored and listed in :attr:`MatchedImages.ignored`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurodecode.utils import UserError

__all__ = ["IMAGE_SUFFIXES", "MatchedImages", "find_truth_images", "match_reconstructions", "read_image"]

#: Image file extensions read (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_SAMPLE = re.compile(r"^\d+$")


@dataclass
class MatchedImages:
    """Reconstructions and ground truths matched by stimulus id.

    Attributes
    ----------
    recons : dict
        Stimulus id -> reconstruction files, in sample order (``samples``).
    truths : dict
        Stimulus id -> ground-truth file (the same ids as ``recons``).
    samples : list of int
        The sample numbers ``k``, sorted (the same for every stimulus).
    ignored : list of Path
        Files that were not read (not images, or, with ``truth_superset``, unused ground truths).
    """

    recons: dict[str, list[Path]]
    truths: dict[str, Path]
    samples: list[int]
    ignored: list[Path] = field(default_factory=list)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _listing(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"{what} {folder}: no such folder.")
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _ids(ids: Any, n: int = 8) -> str:
    ids = sorted(ids)
    return ", ".join(repr(i) for i in ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


def read_image(path: str | os.PathLike) -> Any:
    """Read an image file as an RGB PIL image; an unreadable file is a UserError naming it.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    image : PIL.Image.Image
        The decoded RGB image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise UserError(f"cannot read image {path}: {err}; replace the file or remove it.") from None


def _check_readable(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise UserError(f"cannot read image {path}: {err}; replace the file or remove it.") from None


def find_truth_images(folder: str | os.PathLike, *, what: str = "--truth") -> tuple[dict[str, Path], list[Path]]:
    """Ground-truth images ``<id>.<ext>`` directly in ``folder``.

    Parameters
    ----------
    folder : path-like
        The folder.
    what : str
        How the folder is named in error messages.

    Returns
    -------
    truths : dict
        Stimulus id -> file.
    ignored : list of Path
        Entries that are not image files (sub-folders, other files).
    """
    folder = Path(folder)
    truths: dict[str, Path] = {}
    ignored: list[Path] = []
    for p in _listing(folder, what):
        if not (p.is_file() and _is_image(p)):
            ignored.append(p)
            continue
        if p.stem in truths:
            raise UserError(f"{what} {folder}: two ground-truth images for stimulus {p.stem!r} "
                            f"({truths[p.stem].name} and {p.name}); keep one.")
        truths[p.stem] = p
    if not truths:
        raise UserError(f"{what} {folder}: no ground-truth images (<stimulus_id>.png or .jpg) in this folder.")
    return truths, ignored


def _split_name(stem: str, truth_ids: set[str]) -> tuple[str, int] | None:
    if stem in truth_ids:
        return stem, 0
    head, sep, tail = stem.rpartition("_")
    if sep and head in truth_ids and _SAMPLE.match(tail):
        return head, int(tail)
    return None


def _add(found: dict[str, dict[int, Path]], sid: str, k: int, path: Path) -> None:
    other = found.setdefault(sid, {}).get(k)
    if other is not None:
        raise UserError(f"two reconstruction files for sample {k} of stimulus {sid!r}: {other} and {path}; keep one.")
    found[sid][k] = path


def _find_predictions(folder: Path, truth_ids: set[str]) -> tuple[dict[str, dict[int, Path]], list[Path]]:
    found: dict[str, dict[int, Path]] = {}
    ignored: list[Path] = []
    for p in _listing(folder, "--pred"):
        if p.is_dir():
            if p.name not in truth_ids:
                raise UserError(f"reconstruction folder {p} matches no ground-truth image: there is no "
                                f"{p.name}.png (or .jpg) in the ground-truth folder.")
            for q in sorted(q for q in p.iterdir() if not q.name.startswith(".")):
                if q.is_dir():
                    raise UserError(f"unexpected folder {q}: reconstructions go in <pred>/<stimulus_id>/<k>.png.")
                if not _is_image(q):
                    ignored.append(q)
                    continue
                if not _SAMPLE.match(q.stem):
                    raise UserError(f"reconstruction file {q}: inside <pred>/<stimulus_id>/ files must be named "
                                    f"<k>.png with k an integer sample number (e.g. 0.png).")
                _add(found, p.name, int(q.stem), q)
            continue
        if not _is_image(p):
            ignored.append(p)
            continue
        parsed = _split_name(p.stem, truth_ids)
        if parsed is None:
            raise UserError(f"reconstruction file {p} matches no ground-truth image: name it <stimulus_id>.png, "
                            f"<stimulus_id>_<k>.png or <stimulus_id>/<k>.png with a stimulus id of the "
                            f"ground-truth folder (e.g. {_ids(truth_ids, 3)}).")
        _add(found, *parsed, p)
    return found, ignored


def match_reconstructions(pred: str | os.PathLike, truth: str | os.PathLike, *, truth_superset: bool = False,
                          check_readable: bool = True) -> MatchedImages:
    """Match reconstruction files to ground-truth files by stimulus id (see the module docstring).

    Parameters
    ----------
    pred : path-like
        Folder of reconstructions (``<id>.png``, ``<id>_<k>.png`` or ``<id>/<k>.png``).
    truth : path-like
        Folder of ground-truth images ``<id>.png``.
    truth_superset : bool
        Allow ground truths without reconstruction (e.g. a folder of every stimulus); only the
        reconstructed ids are scored. By default they are an error.
    check_readable : bool
        Open every matched file once (``PIL.Image.verify``) so that a broken file fails here, naming it.

    Returns
    -------
    matched : MatchedImages
        The pairs, the sample numbers and the ignored files.
    """
    pred, truth = Path(pred), Path(truth)
    truths, ignored = find_truth_images(truth)
    found, ignored_pred = _find_predictions(pred, set(truths))
    ignored += ignored_pred
    if not found:
        raise UserError(f"--pred {pred}: no reconstruction images (<stimulus_id>.png, <stimulus_id>_<k>.png or "
                        f"<stimulus_id>/<k>.png) in this folder.")
    missing = set(truths) - set(found)
    if missing and not truth_superset:
        raise UserError(f"{len(missing)} ground-truth image(s) have no reconstruction in {pred}: stimulus ids "
                        f"{_ids(missing)}; add them, or score only the reconstructed ids with --truth-superset.")
    ignored += [truths[i] for i in sorted(missing)]
    sample_sets = {sid: tuple(sorted(ks)) for sid, ks in found.items()}
    reference = max(set(sample_sets.values()), key=lambda s: sum(v == s for v in sample_sets.values()))
    odd = {sid for sid, s in sample_sets.items() if s != reference}
    if odd:
        first = sorted(odd)[0]
        raise UserError(f"stimuli have different sets of samples: most have samples {list(reference)}, but "
                        f"{_ids(odd)} differ (e.g. {first!r} has {list(sample_sets[first])}); every stimulus needs "
                        f"the same samples k, since round k compares sample k of every stimulus.")
    ids = sorted(found)
    recons = {sid: [found[sid][k] for k in reference] for sid in ids}
    pairs = {sid: truths[sid] for sid in ids}
    if check_readable:
        for sid in ids:
            _check_readable(pairs[sid])
            for p in recons[sid]:
                _check_readable(p)
    return MatchedImages(recons=recons, truths=pairs, samples=list(reference), ignored=ignored)
