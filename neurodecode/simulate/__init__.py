"""The built-in simulator: procedural object images and brain responses to them.

- :mod:`~neurodecode.simulate.shapes`: procedurally drawn objects (concept = shape, colour, texture);
- :mod:`~neurodecode.simulate.forward`: the forward model and the simulated data sets.
"""
