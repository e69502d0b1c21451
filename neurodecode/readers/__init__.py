"""Readers: public layouts and MNE objects into trial stores and a stimulus table.

One module per source (``things_eeg2``, ``things_meg``, ``nsd``, ``epochs`` for any MNE object,
``csv``, ``nifti``); each exposes an options dataclass and a ``prepare_*`` function. The command line
(``neurodecode prepare``) is built from the options dataclasses in :mod:`neurodecode.cli.prepare`;
readers know nothing of it.
"""
