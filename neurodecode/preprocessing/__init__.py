"""Preprocessing of EEG/MEG recordings with MNE.

Modules
-------
:mod:`~neurodecode.preprocessing.epoching`
    Filtering, event finding and epoching of continuous recordings (MNE's pipeline, and the same
    computation streamed as one linear operator per epoch).
:mod:`~neurodecode.preprocessing.mvnn`
    Multivariate noise normalisation (MVNN) of epochs, fitted on training data only.
"""
