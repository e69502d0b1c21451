"""The dimension of a teacher layer, found without embedding the stimuli.

A model is built before the data are embedded (its output size is the teacher's embedding size, linked
by the command line), while the embedding itself belongs in the data module's ``prepare_data()``, which
Lightning runs later and on one process. :func:`probe_dim` answers the one question the model needs:
one blank image (or one text) through the teacher.
"""

from __future__ import annotations

from neurodecode.io.store import StimulusTable
from neurodecode.teachers.specs import parse_layer


def probe_dim(spec: str, layer: str = "final", stimuli: StimulusTable | None = None) -> int:
    """Embedding size of ``layer`` of the teacher ``spec``.

    Parameters
    ----------
    spec : str
        Teacher spec (see :mod:`neurodecode.teachers.specs`); ``sim:features`` reads the simulator's
        feature file of ``stimuli``; the name teachers of :mod:`~neurodecode.teachers.names`
        (``onehot``, ``minilm``, ``vectors:PATH``...) read its category names.
    layer : str
        ``"final"``, ``"blockN[-mean|-cls]"`` or ``"text"``.
    stimuli : StimulusTable | None
        The data set's stimuli (needed by ``sim:features`` and the name teachers only).

    Returns
    -------
    dim : int
    """
    from neurodecode.teachers.simulator import SIM_SPEC, simulator_features

    if str(spec) == SIM_SPEC:
        if stimuli is None:
            raise ValueError(f"teacher {SIM_SPEC!r} needs the stimulus table of its simulated data set.")
        mask = [i == 0 for i in range(len(stimuli))]  # one row is enough
        return int(simulator_features(stimuli.select(mask)).shape[1])
    from neurodecode.teachers.names import is_name_teacher, name_dim

    if is_name_teacher(spec):
        if stimuli is None:
            raise ValueError(f"teacher {spec!r} (targets from category names) needs the stimulus table.")
        return name_dim(spec, stimuli)
    import torch
    from PIL import Image

    from neurodecode.teachers.loading import load_teacher

    teacher = load_teacher(spec, device="cpu")
    if parse_layer(layer)[0] == "text":
        return int(teacher.text_features(["a picture"]).shape[-1])
    image = teacher.transform(Image.new("RGB", (64, 64)))[None]
    with torch.inference_mode():
        return int(teacher.image_features(image, layers=[layer])[layer].shape[-1])
