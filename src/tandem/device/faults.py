"""Crash injection for the updater's crash-safety tests.

With ``TANDEM_FAULT_AT=<step>`` in the environment, the process kills itself with SIGKILL when it
reaches that step: no ``finally`` blocks, no flushing, as if the phone's battery died. The tests
then open the store again in a fresh process and check that it holds a whole model. Unset (as
on every real device), each call costs one dictionary lookup.

Steps, in the order an install passes them (tandem.device.model_store documents what each means):
``download`` (a download part-way: some of its bytes in the .part file), ``delta`` (a delta
patch downloaded and decrypted, the file being rebuilt from it in memory), ``staging`` (one file written into a half-built
version folder), ``staged`` (every file written, folder not yet in place), ``renamed`` (the
version folder in place, not yet pointed to), ``keyed`` (its data key stored), ``pointed``
(``current.json`` switched), ``cleanup`` (one old version removed, others not yet).
"""

from __future__ import annotations

import os
import signal

STEPS = ("download", "delta", "staging", "staged", "renamed", "keyed", "pointed", "cleanup")
ENV = "TANDEM_FAULT_AT"


def reached(step: str) -> None:
    if os.environ.get(ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
