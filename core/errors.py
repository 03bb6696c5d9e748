"""The errors core raises at its boundaries, each meant to be shown to a user as it is."""


class ModelLoadError(Exception):
    """A model could not be found or read; the message says what was tried and how to fix it."""
