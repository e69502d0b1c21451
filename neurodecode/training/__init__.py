"""Training: the data module, the Lightning modules, export and trial-level cross-validation."""
