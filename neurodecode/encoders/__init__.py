"""Brain encoders: one contract (:mod:`.base`), one registry.

Every encoder maps a brain response to an embedding: ``Encoder(n_chans, n_times, n_outputs, *,
sfreq=None, chs_info=None, n_subjects=1, **arch)`` for EEG/MEG, ``Encoder(n_voxels, n_outputs, *,
n_subjects=1, **arch)`` for fMRI; ``forward(x, subject=None)``, ``forward_features`` /
``forward_head``, ``get_config`` / ``from_config``. Classes are importable by path for LightningCLI
(``class_path: neurodecode.encoders.ATM``) or by name from the registry::

    from neurodecode.encoders import create_encoder, list_encoders
    list_encoders()
    model = create_encoder("atm", n_chans=63, n_times=250, n_outputs=1024)
"""

from neurodecode.encoders.atm import ATM
from neurodecode.encoders.base import (
    BrainEncoder,
    TimeseriesEncoder,
    VoxelEncoder,
    create_encoder,
    encoder_class,
    list_encoders,
    normalize_chs_info,
    register_encoder,
)
from neurodecode.encoders.brain_module import BrainModule
from neurodecode.encoders.eegnet import EEGNet
from neurodecode.encoders.fmri import FMRIMLP
from neurodecode.encoders.mlp import MLP
from neurodecode.encoders.nice import NICE
from neurodecode.encoders.ridge import Ridge
from neurodecode.encoders.shallow import ShallowConvNet

__all__ = [
    "ATM",
    "NICE",
    "EEGNet",
    "ShallowConvNet",
    "BrainModule",
    "MLP",
    "FMRIMLP",
    "Ridge",
    "BrainEncoder",
    "TimeseriesEncoder",
    "VoxelEncoder",
    "register_encoder",
    "list_encoders",
    "create_encoder",
    "encoder_class",
    "normalize_chs_info",
]
