"""Exception types raised by the data layer.

Every error names the file and/or bag concerned, what was found and what was expected.
"""

from __future__ import annotations

__all__ = ["DataFormatError", "DataNotFoundError", "DownloadError"]


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
