"""Recycled read buffers: a bag is read into memory that an earlier bag used, once nothing refers to it any more.

A whole slide's features are tens of megabytes. Read into a new array, every page of it is first touched by the
read (a page fault each, and the kernel zeroes the page; allocations of more than 32 MiB come straight from
``mmap`` and go back to the system when freed, so every such bag pays again). Reading one bag per step into one
of a few recycled buffers makes the read a plain copy from the page cache. A buffer is handed out again only when
no tensor or array refers to it any more (its reference count), so a batch kept by the caller is never
overwritten: a new buffer is allocated instead.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["RecycledBuffers"]


class RecycledBuffers:
    """Up to ``keep`` float32 buffers, each handed out as an array of the requested shape when it is free.

    Args:
        keep: buffers kept (2: the bag of the running step and the next one being read).

    ``take(shape)`` returns a view of a free kept buffer large enough, else of a new buffer (kept in place of
    a free smaller one, or while fewer than ``keep`` are kept). Memory held: at most ``keep`` × the largest bag
    read, for as long as the object lives.
    """

    def __init__(self, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"RecycledBuffers keeps at least one buffer, got keep={keep}")
        self.keep = int(keep)
        self.buffers: list[np.ndarray] = []
        self.reused = 0  # how many reads went into a recycled buffer (for tests and benchmarks)

    def _is_free(self, k: int) -> bool:
        # references: the list's and getrefcount's argument; any view, array or tensor on it adds one
        return sys.getrefcount(self.buffers[k]) == 2

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """A C-contiguous float32 array of ``shape`` (its contents are arbitrary)."""
        need = int(np.prod(shape, dtype=np.int64))
        free = [k for k in range(len(self.buffers)) if self._is_free(k)]
        fits = [k for k in free if self.buffers[k].size >= need]
        if fits:
            self.reused += 1
            return self.buffers[fits[0]][:need].reshape(shape)
        buf = np.empty(need, dtype=np.float32)
        if free:  # a free buffer too small for this bag: replace it
            self.buffers[free[0]] = buf
        elif len(self.buffers) < self.keep:
            self.buffers.append(buf)
        return buf.reshape(shape)
