"""What a user's Ctrl-C means during a task, the same on every runtime.

The first interrupt asks the requester to back off at the next phase or epoch boundary: it
closes the open epoch (or cancels during bidding) and everyone settles. A second one stops the
current step at once (a ``KeyboardInterrupt``); the requester then backs off and settles
what can be settled. While it settles, or writes what was paid for (the model and the report),
further interrupts are noted and ignored: nothing already paid for is lost to an impatient key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class Interrupts:
    """Counts interrupts; ``press`` is what a SIGINT handler calls."""

    def __init__(self) -> None:
        self.presses = 0
        self._shielded = 0
        self._raised = False

    @property
    def requested(self) -> bool:
        """Whether the requester should back off at the next boundary."""
        return self.presses > 0

    @property
    def urgent(self) -> bool:
        """Whether the current step was stopped (a second interrupt)."""
        return self._raised

    def press(self) -> str:
        """Record one interrupt: ``"back off"``, ``"stop now"`` (raises KeyboardInterrupt) or
        ``"settling"`` (ignored: the task is settling or its results are being written)."""
        self.presses += 1
        if self.presses == 1:
            return "back off"
        if self._shielded or self._raised:
            return "settling"
        self._raised = True
        raise KeyboardInterrupt

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Interrupts inside are ignored (settling, writing the model and the report)."""
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1
