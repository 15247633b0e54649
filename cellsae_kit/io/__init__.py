"""Trained dictionaries that travel: an SAE with its input definition, names and provenance in one folder."""

from ._dictionary import Dictionary, read_dictionary, write_dictionary

__all__ = ["Dictionary", "read_dictionary", "write_dictionary"]
