"""Shared docstring vocabulary (MNE's ``docdict`` / ``fill_doc`` idea).

Parameter descriptions repeated across functions live once in :data:`docdict`; a docstring names
them as ``%(key)s`` on a line of their own, indented like the other parameters, and
:func:`fill_doc` fills them in with that indentation::

    @fill_doc
    def prepare_x(root, out, *, overwrite=False, progress=True, verbose=None):
        '''Prepare X.

        Parameters
        ----------
        %(overwrite)s
        %(progress)s
        %(verbose)s
        '''
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["docdict", "fill_doc"]

F = TypeVar("F", bound=Callable)

docdict: dict[str, str] = {}

# --------------------------------------------------------------------------------------------------
# run control
# --------------------------------------------------------------------------------------------------
docdict["overwrite"] = """overwrite : bool
    Rebuild stores that already exist; by default a subject whose store exists and validates is
    skipped, so an interrupted run resumes where it stopped."""
docdict["progress"] = """progress : bool
    Show progress bars."""
docdict["progress_bar"] = """progress_bar : bool
    Show progress bars."""
docdict["verbose"] = """verbose : bool | str | None
    Log level of neurodecode (and MNE): ``True`` or ``"INFO"`` says what is being done; ``None``
    keeps the current level."""
docdict["root"] = """root : path-like
    Folder holding the data set in its public layout (see the module docstring)."""
docdict["out"] = """out : path-like
    Output folder: ``sub-XX.h5`` trial stores, ``stimuli.tsv`` and ``dataset.json`` (created or
    extended, so subjects prepared one by one end in one folder)."""
docdict["options"] = """options : ReaderOptions | None
    The reader's option object (see its class for every field and default); ``None`` uses the
    defaults."""
docdict["fields"] = """**fields
    Any option of ``options`` (nested processing options included) by name, overriding it, e.g.
    ``sfreq=100.0``; unknown names are an error."""
docdict["returns_out"] = """out : Path
    The prepared folder."""

# --------------------------------------------------------------------------------------------------
# signal processing
# --------------------------------------------------------------------------------------------------
docdict["l_freq_h_freq"] = """l_freq, h_freq : float | None
    Band-pass edges in Hz (high-pass and low-pass); ``None`` skips that edge."""
docdict["tmin_tmax"] = """tmin, tmax : float | None
    Epoch (or crop) window in s around the stimulus onset."""
docdict["baseline"] = """baseline : tuple of (float | None, float | None) | None
    Baseline window in s subtracted from each epoch (``(None, 0)``: from the start to 0);
    ``None`` applies no baseline correction."""
docdict["sfreq"] = """sfreq : float | None
    Sampling rate in Hz to resample to; ``None`` keeps the data's rate."""
docdict["chunk_size"] = """chunk_size : int
    Epochs processed at a time; bounds memory."""
docdict["scaling"] = """scaling : "none" | "zscore" | "robust"
    Per-channel scaling fitted on training trials only (mean and standard deviation, or median
    and inter-quartile range, over trials and time)."""
docdict["subjects"] = """subjects : list of str | None
    Subject labels to prepare; ``None`` prepares every subject found."""
docdict["images_categories"] = """images : path-like | None
    Folder holding one image folder per category (``NAME``, ``NAMEs`` or ``NAMEes``), or image files
    named ``NAME-*``, ``NAME_*``, ``NAME *`` or ``NAME<digit>*`` (copied to ``OUT/images/NAME/``).
image_folders : str | dict | None
    Explicit ``category=folder`` pairs (``"face=stimuli/faces,house=stimuli/houses"``), overriding
    ``images``."""


def _indent_of(doc: str) -> str:
    for line in doc.expandtabs().splitlines()[1:]:
        stripped = line.lstrip()
        if stripped:
            return line[: len(line) - len(stripped)]
    return ""


def fill_doc(f: F) -> F:
    """Fill the ``%(key)s`` entries of ``f.__doc__`` from :data:`docdict`.

    Continuation lines of an entry get the indentation of the docstring, so an entry placed on a
    parameter line reads as the other parameters do.

    Parameters
    ----------
    f : callable
        Function or class with a docstring.

    Returns
    -------
    f : callable
        The same object, its docstring filled.
    """
    doc = f.__doc__
    if not doc:
        return f
    indent = _indent_of(doc)
    filled = {k: v.replace("\n", "\n" + indent) for k, v in docdict.items()}
    try:
        f.__doc__ = doc % filled
    except KeyError as err:
        raise KeyError(f"{getattr(f, '__qualname__', f)}: docstring names %({err.args[0]})s, which is not in "
                       "neurodecode._docs.docdict.") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{getattr(f, '__qualname__', f)}: cannot fill the docstring ({err}); write a literal "
                         "'%' as '%%'.") from None
    return f
