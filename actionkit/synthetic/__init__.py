"""Synthetic data sets written by the project's own generators (for the demo, the tests and the benchmarks), kept
apart from the loaders of real data in :mod:`actionkit.data`."""
from .ava import make_ava
from .kinetics import make_kinetics

__all__ = ["make_ava", "make_kinetics"]
