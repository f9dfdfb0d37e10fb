"""Evidence to flags: proven evidence flags at once, statistical evidence must repeat.

A flag slashes a processor's whole stake on chain, so a false flag is expensive. The policy:

* **proven** evidence (a digest contradicted by a recomputation, a result no honest block can
  decrypt to) flags the processor in the epoch it is found;
* **statistical** evidence (an outlier score above ``z_threshold``) flags only when the same
  processor draws it in at least ``repeat`` of the last ``window`` epochs. With a per-epoch
  false-alarm rate p for an honest processor, a false flag needs ``repeat`` alarms in ``window``
  epochs: about ``C(window, repeat) * p ** repeat`` (p = 1% gives 3e-4 for 2 of 3).

Data owners cannot be slashed by the contract; evidence against them is reported (and their
blocks are down-weighted by the robust aggregator), never flagged on chain.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from fedmarket.integrity.types import Evidence, Strength


@dataclass(frozen=True)
class Flag:
    """A processor to slash this epoch and the evidence that convicted it."""

    party: str
    epoch: int
    evidence: tuple[Evidence, ...]

    @property
    def proven(self) -> bool:
        return any(e.strength is Strength.PROVEN for e in self.evidence)

    def to_json(self) -> dict[str, object]:
        return {
            "party": self.party,
            "epoch": self.epoch,
            "proven": self.proven,
            "evidence": [e.to_json() for e in self.evidence],
        }


@dataclass
class FlagPolicy:
    """Stateful across epochs: remembers which epochs each processor drew statistical alarms."""

    repeat: int = 2
    window: int = 3
    max_flags: int = 16  # the contract's MAX_FLAGGED
    _alarms: dict[str, dict[int, list[Evidence]]] = field(
        default_factory=lambda: defaultdict(dict), init=False
    )
    _flagged: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.repeat <= self.window:
            raise ValueError(f"need 1 <= repeat <= window, got {self.repeat} and {self.window}")

    @property
    def flagged(self) -> frozenset[str]:
        return frozenset(self._flagged)

    def decide(self, epoch: int, evidence: list[Evidence], active: set[str]) -> list[Flag]:
        """Flags for this epoch among ``active`` processors (a flagged one has left the task)."""
        proven: dict[str, list[Evidence]] = defaultdict(list)
        for e in evidence:
            if e.role != "processor" or e.party not in active or e.party in self._flagged:
                continue
            if e.strength is Strength.PROVEN:
                proven[e.party].append(e)
            else:
                self._alarms[e.party].setdefault(epoch, []).append(e)
        flags = [Flag(p, epoch, tuple(es)) for p, es in sorted(proven.items())]
        for party, epochs in sorted(self._alarms.items()):
            if party in proven or party in self._flagged or party not in active:
                continue
            recent = [t for t in epochs if epoch - self.window < t <= epoch]
            if epoch in epochs and len(recent) >= self.repeat:
                flags.append(
                    Flag(party, epoch, tuple(e for t in sorted(recent) for e in epochs[t]))
                )
        # Proven first, then the strongest statistical cases, up to what one call can slash.
        flags.sort(key=lambda f: (not f.proven, -max(e.score for e in f.evidence), f.party))
        flags = flags[: self.max_flags]
        self._flagged.update(f.party for f in flags)
        return flags
