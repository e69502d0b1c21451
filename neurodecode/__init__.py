"""neurodecode: decode what a person saw from EEG, MEG and fMRI.

Brain responses are mapped into the embedding space of a frozen vision model, which tells which image
was seen (retrieval, classification, time-resolved decoding) and lets a diffusion prior and generator
draw it back. Heavy libraries (torch, MNE, open_clip, diffusers) are imported only where needed, so
``import neurodecode`` stays fast.
"""

from neurodecode._version import __version__
from neurodecode.utils import set_log_level

__all__ = ["__version__", "set_log_level", "sys_info", "from_pretrained"]


def from_pretrained(path, *, device="cpu"):
    """Load a model exported by ``neurodecode export`` (see :func:`neurodecode.training.export.from_pretrained`)."""
    from neurodecode.training.export import from_pretrained as _from_pretrained

    return _from_pretrained(path, device=device)


def sys_info(show: bool = True) -> dict:
    """Versions of Python and the libraries neurodecode uses, and the devices seen.

    Parameters
    ----------
    show : bool
        Print the report as well as returning it.

    Returns
    -------
    info : dict
    """
    from neurodecode._sys_info import sys_info as _sys_info

    return _sys_info(show=show)
