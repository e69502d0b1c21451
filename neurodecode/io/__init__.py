"""Storage: the trial store (HDF5), the stimulus table, channel sets, manifests and safe loading.

The bottom of the data flow: every other stage reads and writes through these modules, and they
import nothing of neurodecode but :mod:`neurodecode.utils`.
"""
