"""Reporting: evaluate a checkpoint into metrics.json, report.md and figures (PNG).

- :mod:`~neurodecode.reporting.evaluate`: load a checkpoint and its data, embed the test set, compute
  every number (``metrics.json``);
- :mod:`~neurodecode.reporting.report`: ``report.md`` from the metrics;
- :mod:`~neurodecode.reporting.report_figures`: the PNG figures of one evaluation;
- :mod:`~neurodecode.reporting.compare`: several checkpoints side by side, with paired tests;
- :mod:`~neurodecode.reporting.figures`: the figure functions (plain arrays in, a Figure out).
"""
