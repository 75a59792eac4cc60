"""Exception types raised by the data layer.

Every error names the file and/or bag concerned, what was found and what was expected.
"""

from __future__ import annotations

__all__ = ["DataFormatError", "DataNotFoundError", "DownloadError", "MissingDependencyError", "UnknownDatasetError"]


class DataFormatError(ValueError):
    """A data file exists but its content is malformed (truncated, corrupt, ragged, wrong shape...)."""


class DataNotFoundError(FileNotFoundError):
    """A data file the loader needs is not where it is expected.

    The message says which file to place in which folder (and where it can be downloaded).
    """


class DownloadError(OSError):
    """A download failed (offline, HTTP error, truncated transfer or checksum mismatch).

    No final file is left behind: partial data only ever lives in a ``.part`` file, which is removed.
    """


class MissingDependencyError(ImportError, ValueError):
    """An optional package needed to read a file format is not installed (e.g. h5py for ``.h5`` bags).

    It is an :class:`ImportError` (what Python raises for a missing package) and a :class:`ValueError` (a
    problem the user fixes, not a bug), so command-line front ends report it as a user error. The message
    names the package, the file and the ``pip install`` command; :attr:`name` is the package's import name.
    """

    def __init__(self, message: str, *, package: str) -> None:
        super().__init__(message, name=package)


class UnknownDatasetError(KeyError, ValueError):
    """A dataset name that is neither a known dataset nor an alias; the message lists every valid name.

    A :class:`ValueError` (a user mistake) that stays a :class:`KeyError` for code written against the older
    ``get_spec`` contract. ``str()`` is the plain message (a bare ``KeyError`` would quote it).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
