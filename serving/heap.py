"""Keeping a serving process's long-lived objects out of the garbage collector's way."""

from __future__ import annotations

import contextlib
import ctypes
import gc


def freeze_heap() -> None:
    """Hide everything alive now from the cyclic garbage collector; called once a model loads.

    A loaded API or worker holds a few hundred thousand long-lived objects (libraries and
    models). A full collection walks them all, stalling the requests or chunks in flight, and
    the short-lived objects each request or chunk leaves behind set one off now and then.
    Frozen objects are never walked, and are still freed by reference counting. Unfreezing
    first lets this collection free a model that a swap replaced.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _return_free_memory()


def _return_free_memory() -> None:
    """Give the heap pages freed by loading (downloads, verification) back to the system.

    glibc keeps them otherwise. A no-op where there is no glibc.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
