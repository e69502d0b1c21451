"""Preprocessing with MNE: epoching of raw recordings and multivariate noise normalisation (MVNN)."""
