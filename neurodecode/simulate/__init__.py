"""The built-in simulator: procedural object images and brain responses to them.

- :mod:`~neurodecode.simulate.shapes`: procedurally drawn objects (concept = shape, colour, texture);
- :mod:`~neurodecode.simulate.config`: :class:`~neurodecode.simulate.config.SimulationConfig`, the
  parameters of a simulated data set and the per-modality defaults;
- :mod:`~neurodecode.simulate.stimuli`: the zero-shot concept split, rendered exemplars and their
  true features;
- :mod:`~neurodecode.simulate.sensors`: the EEG and MEG sensor layouts (``mne.Info``);
- :mod:`~neurodecode.simulate.forward`: the forward model (sources, components, noise, mixing) and
  noise sampling;
- :mod:`~neurodecode.simulate.ceiling`: the ideal decoder's ceiling (exact whitening, Bayes-optimal
  identification);
- :mod:`~neurodecode.simulate.dataset`: :func:`~neurodecode.simulate.dataset.simulate`, which
  simulates a whole data set and writes the prepared folder (used by ``neurodecode simulate`` and
  ``neurodecode demo``).
"""
