"""The one exception hierarchy of fedmarket: every error says what was wrong and what to do."""

from __future__ import annotations


class FedmarketError(Exception):
    """Base of every error fedmarket raises on purpose.

    ``hint`` tells the user what to do about it; the CLI prints both and exits non-zero
    without a traceback.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(FedmarketError):
    """A task spec, a command-line option or a setting is invalid."""


class ChainError(FedmarketError):
    """The chain could not be reached, or answered something unexpected."""


class ContractRevert(ChainError):
    """A contract call reverted; ``reason`` is the contract's revert string (``market: ...``)."""

    def __init__(self, reason: str, *, function: str = "", hint: str | None = None) -> None:
        where = f"{function}: " if function else ""
        super().__init__(f"{where}transaction reverted: {reason}", hint=hint)
        self.reason = reason
        self.function = function


class UntrustedInputError(FedmarketError):
    """Bytes from another party were too large, malformed, or do not match the task.

    ``party`` names who sent them, so the caller can log and flag that party.
    """

    def __init__(self, message: str, *, party: str = "unknown party", hint: str | None = None):
        super().__init__(f"{party}: {message}", hint=hint)
        self.party = party


class CryptoError(FedmarketError):
    """Homomorphic-encryption parameters or keys are unusable for the requested operation."""
