"""Workarounds for interactions between the libraries circuitkit builds on."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def nnsight_save_unmounted() -> Iterator[None]:
    """Temporarily remove the ``.save`` attribute that nnsight mounts on every Python object.

    nnsight (>= 0.5) adds ``save`` to ``object`` at import so ``value.save()`` works inside traces. numba's
    ``jitclass`` -- used by skglm's datafits and penalties -- then sees ``save`` as an unsupported class
    member and refuses to compile ("class members are not yet supported: save"). Code that compiles
    jitclasses runs inside this context; the mount is restored in ``finally``.
    """
    mod = sys.modules.get("nnsight")
    mounted = mod is not None and "save" in object.__dict__
    if not mounted:
        yield
        return
    from nnsight._c import mount, unmount

    unmount("save")
    try:
        yield
    finally:
        mount(mod.save, "save")
