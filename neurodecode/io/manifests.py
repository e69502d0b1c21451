"""Data manifests: what a public data set's root folder must hold, checked before any long work.

A manifest is a YAML file shipped inside the package, ``neurodecode/io/data_manifests/<name>.yaml``
(one per data set; package data found through :mod:`importlib.resources`, so it is found in an
installed wheel as in a checkout; ``$NEURODECODE_MANIFESTS`` names another folder)::

    name: things_eeg2
    title: THINGS-EEG2 (Gifford et al. 2022)
    url: https://osf.io/3jk45/
    licence: CC BY 4.0
    layouts:                      # alternative layouts of the same data set
      community_250hz:
        description: ...
        files:                    # paths relative to the root; {subject} is filled in per subject
          - path: Preprocessed_data_250Hz/sub-{subject}/preprocessed_eeg_training.npy
            per_subject: true
            shape: [16540, 4, 63, 250]   # documentation and reader checks
            dtype: float32
            sha256: null                 # checked with verify_checksums=True when given
          - glob: training_images/*/*.jpg   # a pattern that must match `count` files
            count: 16540
    splits: {...}                 # free-form description of the official splits

:func:`check_root` lists, in one message, every file that is missing or differs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from neurodecode.utils import UserError

MANIFEST_ENV = "NEURODECODE_MANIFESTS"


class ManifestError(FileNotFoundError):
    """A data root that does not match its manifest; the message lists every problem."""

    def __init__(self, root: Path, manifest: str, layout: str, problems: list[str]):
        self.root = root
        self.problems = problems
        lines = [f"{root} does not match the '{layout}' layout of the {manifest} manifest "
                 f"({len(problems)} problem(s)):"]
        lines += [f"  - {p}" for p in problems[:50]]
        if len(problems) > 50:
            lines.append(f"  ... and {len(problems) - 50} more")
        lines.append(f"See {manifests_dir() / (manifest + '.yaml')} for where to get each file.")
        super().__init__("\n".join(lines))


def manifests_dir() -> Path:
    """Folder holding the manifests: the package data folder ``neurodecode/io/data_manifests``
    (through :func:`importlib.resources.files`), or ``$NEURODECODE_MANIFESTS`` when set."""
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env)
    return Path(str(resources.files("neurodecode.io").joinpath("data_manifests")))


def available_manifests() -> list[str]:
    """Names of the manifests found (sorted)."""
    return sorted(p.stem for p in manifests_dir().glob("*.yaml"))


def load_manifest(name: str) -> dict[str, Any]:
    """Read the manifest ``<name>.yaml`` (e.g. ``"things_meg"``) from :func:`manifests_dir`."""
    import yaml

    path = manifests_dir() / f"{name}.yaml"
    if not path.is_file():
        hint = (f" (${MANIFEST_ENV} is set: unset it to use the manifests shipped with neurodecode)"
                if os.environ.get(MANIFEST_ENV) else
                " (the package data is missing: reinstall neurodecode)")
        raise FileNotFoundError(f"No manifest '{name}' in {manifests_dir()}; available: {available_manifests()}"
                                f"{hint}.")
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ValueError(f"Manifest {path} is not valid YAML: {err}") from None


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_root(
    root: Path | str,
    manifest: str | dict[str, Any],
    layout: str,
    *,
    subjects: Sequence[str] = (),
    verify_checksums: bool = False,
    optional_ok: bool = True,
) -> list[Path]:
    """Check that ``root`` holds every file of ``layout``; raise one :class:`ManifestError` listing all gaps.

    Parameters
    ----------
    root : path-like
        The data set's root folder.
    manifest : str | dict
        Manifest name (``<name>.yaml`` in :func:`manifests_dir`) or an already loaded manifest.
    layout : str
        Which layout of the manifest to check.
    subjects : sequence of str
        Subject labels substituted for ``{subject}`` in per-subject paths.
    verify_checksums : bool
        Also compare SHA-256 checksums where the manifest gives them (slow for large files).
    optional_ok : bool
        Entries marked ``optional: true`` may be absent.

    Returns
    -------
    files : list of Path
        The files found.
    """
    root = Path(root)
    man = load_manifest(manifest) if isinstance(manifest, str) else manifest
    name = man.get("name", str(manifest))
    layouts = man.get("layouts", {})
    if layout not in layouts:
        raise ValueError(f"Manifest {name} has no layout {layout!r}; available: {sorted(layouts)}.")
    if root.exists() and not root.is_dir():
        raise UserError(f"--root {root} is a file, not a folder: give the folder that holds the {name} data set "
                        f"(the '{layout}' layout, see {manifests_dir() / (str(name) + '.yaml')}).")
    if not root.is_dir():
        raise ManifestError(root, name, layout, [f"the root folder {root} does not exist"])
    problems: list[str] = []
    found: list[Path] = []
    for entry in layouts[layout].get("files", []):
        optional = bool(entry.get("optional", False)) and optional_ok
        subs = subjects if entry.get("per_subject") else [None]
        for subject in subs:
            if "glob" in entry:
                pattern = entry["glob"].format(subject=subject) if subject else entry["glob"]
                matches = sorted(root.glob(pattern))
                want = entry.get("count")
                if not matches and not optional:
                    problems.append(f"no file matches {pattern}")
                elif want is not None and len(matches) != int(want) and not optional:
                    problems.append(f"{pattern} matches {len(matches)} file(s), expected {want}")
                found += matches
                continue
            rel = entry["path"].format(subject=subject) if subject else entry["path"]
            alts = [rel] + [a.format(subject=subject) if subject else a for a in entry.get("alternatives", [])]
            hit = next((root / a for a in alts if (root / a).exists()), None)
            if hit is None:
                if not optional:
                    more = f" (or {', '.join(alts[1:])})" if len(alts) > 1 else ""
                    problems.append(f"missing {rel}{more}")
                continue
            if hit.is_file() and hit.stat().st_size == 0:
                problems.append(f"{hit.relative_to(root)} is empty")
                continue
            min_bytes = entry.get("min_bytes")
            if min_bytes and hit.is_file() and hit.stat().st_size < int(min_bytes):
                problems.append(f"{hit.relative_to(root)} is {hit.stat().st_size} bytes, expected at least "
                                f"{min_bytes} (truncated download?)")
            sha = entry.get("sha256")
            if verify_checksums and sha and hit.is_file():
                got = _sha256(hit)
                if got != sha:
                    problems.append(f"{hit.relative_to(root)} has SHA-256 {got[:12]}..., expected {sha[:12]}... "
                                    f"(corrupt or different release)")
            found.append(hit)
    if problems:
        raise ManifestError(root, name, layout, problems)
    return found
