"""Every request the soak sends is entered here with its outcome, so the summary can account
for all of them: answered, cancelled, or rejected with a reason; anything else is unaccounted,
with what happened."""

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Ledger:
    outcomes: Counter[str] = field(default_factory=Counter)
    unaccounted: list[str] = field(default_factory=list)  # "<action>: <what happened>"
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self) -> None:
        """A request is about to be sent: it must end in `enter` or `lost`."""
        with self._lock:
            self.sent += 1

    def enter(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def lost(self, action: str, what: str) -> None:
        with self._lock:
            self.unaccounted.append(f"{action}: {what}")

    @property
    def settled(self) -> int:
        return sum(self.outcomes.values()) + len(self.unaccounted)

    def render(self) -> str:
        width = max((len(k) for k in self.outcomes), default=10)
        lines = [f"requests by outcome ({self.sent} sent)"]
        lines += [f"  {name:<{width}}  {count:>6}" for name, count in sorted(self.outcomes.items())]
        missing = self.sent - self.settled  # sent but never settled: a bug in the soak itself
        lines.append(f"  {'unaccounted':<{width}}  {len(self.unaccounted) + missing:>6}")
        lines += [f"    {line}" for line in sorted(set(self.unaccounted))[:20]]
        return "\n".join(lines)

    @property
    def all_accounted(self) -> bool:
        return not self.unaccounted and self.sent == self.settled
