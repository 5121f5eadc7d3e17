"""Errors a user can act on: the CLI prints them as one line, never a traceback."""


class LabError(Exception):
    """A failure explained in one line (bad input, missing binary, lab not ready)."""


class ManifestError(LabError):
    """A manifest that cannot be loaded or rendered; the message names the file."""


class PatchError(LabError):
    """An EnvoyFilter patch that cannot be applied (for instance, one that matches nothing)."""
