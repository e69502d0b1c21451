"""Sensor layouts of the simulator: the 63 THINGS-EEG2 electrodes and a 271-channel CTF-like MEG."""

from __future__ import annotations

import numpy as np

from neurodecode.io.channels import THINGS_EEG2_63

__all__ = ["EEG63", "N_MEG", "eeg_info", "eeg_montage", "meg_info", "meg_layout_xy"]

EEG63 = THINGS_EEG2_63  # the THINGS-EEG2 montage (Fz reference)
N_MEG = 271


def eeg_info(sfreq: float = 250.0):
    """``mne.Info`` of the 63 THINGS-EEG2 channels with positions from MNE's ``colin27_1005`` montage."""
    import mne

    info = mne.create_info(list(EEG63), float(sfreq), "eeg")
    info.set_montage(eeg_montage(), verbose=False)
    return info


def eeg_montage():
    """MNE's ``colin27_1005`` montage (``standard_1005`` on MNE versions without it).

    Returns
    -------
    montage : mne.channels.DigMontage
    """
    import mne

    try:
        return mne.channels.make_standard_montage("colin27_1005")
    except ValueError:  # older MNE
        return mne.channels.make_standard_montage("standard_1005")


def meg_info(sfreq: float = 200.0):
    """``mne.Info`` of 271 axial-gradiometer-like MEG channels with positions from the CTF-275 layout.

    Positions: the 2-D layout coordinates are mapped onto a hemisphere of radius 12 cm (x to the
    right, y to the front, z up) and stored in each channel's ``loc``; the channel type is ``mag``.
    """
    import mne

    lay = mne.channels.read_layout("CTF-275")
    names = [n.split("-")[0] for n in lay.names][:N_MEG]
    xy = meg_layout_xy(lay)[:N_MEG]
    info = mne.create_info(names, float(sfreq), "mag")
    r = 0.12
    with info._unlock():
        for ch, (x, y) in zip(info["chs"], xy, strict=True):
            px, py = (x - 0.5) * 2, (y - 0.5) * 2
            rho = min(np.hypot(px, py), 1.0)
            theta = rho * np.pi / 2
            phi = np.arctan2(py, px)
            pos = r * np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
            ch["loc"][:3] = pos
            ch["loc"][3:12] = np.r_[1, 0, 0, 0, 1, 0, pos / np.linalg.norm(pos)]
    return info


def meg_layout_xy(lay) -> np.ndarray:
    """Box centres of an MNE sensor layout, normalised to ``[0, 1]^2``.

    Parameters
    ----------
    lay : mne.channels.Layout
        E.g. ``mne.channels.read_layout("CTF-275")``.

    Returns
    -------
    xy : ndarray, shape (n_channels, 2)
    """
    xy = lay.pos[:, :2] + lay.pos[:, 2:4] / 2
    xy = (xy - xy.min(0)) / (xy.max(0) - xy.min(0))
    return xy

