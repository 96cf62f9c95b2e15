"""sebench: a reproducibility suite for Squeeze-and-Excitation networks."""

__version__ = "0.1.0"
