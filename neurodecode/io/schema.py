"""The trial-store schema: version, allowed values, file names, and :class:`StoreError`.

Schema (``schema_version`` 2)
-----------------------------
Root attributes
    ``schema_version`` (int), ``modality`` (``"eeg"``, ``"meg"`` or ``"fmri"``), ``subject`` (str),
    ``provenance`` (JSON list of processing steps), ``neurodecode_version`` (str); for EEG/MEG also
    ``sfreq`` (Hz, float), ``tmin`` (s, float) and ``info`` (``mne.Info.to_json_dict()`` as JSON).
``/signals``
    float32, ``(n_trials, n_chans, n_times)`` for EEG/MEG or ``(n_trials, n_voxels)`` for fMRI,
    chunked per trial so random access in a ``DataLoader`` is cheap.
``/trials/*``
    one entry per trial: ``stimulus_id`` (str), ``repetition`` (int32), ``split`` (``"train"`` or
    ``"test"``), ``session`` (int32) and any further 1-D fields a reader adds (e.g. ``run``,
    ``label``, ``onset``).
``/voxels/ijk`` (fMRI, optional)
    voxel indices into the volume, with attributes ``volume_shape`` and ``affine``.

The stimulus table is not in the store: it is the ``stimuli.tsv`` of the *prepared folder* the
store lives in (one table for every subject), and every trial's ``stimulus_id`` must be one of its
rows. Version 1 stores (written before neurodecode kept one table per folder) also hold a copy of
the table in a ``/stimuli`` group (columns ``stimulus_id``, ``concept``, ``image_path``,
``split``); they still open, and the copy is used only when the folder has no ``stimuli.tsv``.
"""

from __future__ import annotations

from neurodecode.utils import PathLike

__all__ = [
    "DATASET_FILENAME",
    "MODALITIES",
    "READABLE_SCHEMA_VERSIONS",
    "REQUIRED_TRIAL_FIELDS",
    "SCHEMA_VERSION",
    "SPLITS",
    "STIMULI_FILENAME",
    "STIMULUS_COLUMNS",
    "StoreError",
]

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
MODALITIES = ("eeg", "meg", "fmri")
SPLITS = ("train", "test")
STIMULUS_COLUMNS = ("stimulus_id", "concept", "image_path", "split")
REQUIRED_TRIAL_FIELDS = ("stimulus_id", "repetition", "split", "session")
STIMULI_FILENAME = "stimuli.tsv"
DATASET_FILENAME = "dataset.json"


class StoreError(ValueError):
    """A trial store or stimulus table that cannot be used, with the file and field at fault.

    Parameters
    ----------
    file : path-like | None
        The file at fault (``None`` when the problem is not tied to a file yet).
    field : str | None
        The attribute, dataset or column at fault.
    problem : str
        What is wrong.
    fix : str | None
        How to fix it.
    """

    def __init__(self, file: PathLike | None, field: str | None, problem: str, fix: str | None = None):
        self.file = None if file is None else str(file)
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{self.file}" if self.file else "trial store"
        if field:
            where += f", field '{field}'"
        msg = f"{where}: {problem}"
        if fix:
            msg += f" {fix}"
        super().__init__(msg)
