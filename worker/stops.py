"""Streamed text with `stop` strings cut out, holding back only what might start one."""


class StopMatcher:
    def __init__(self, stops: list[str]):
        self._stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to send now, and whether a stop string was reached (text before it only)."""
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return buf[: min(hits)], True
        keep = max((n for s in self._stops for n in range(1, len(s)) if buf.endswith(s[:n])), default=0)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    @property
    def holding(self) -> bool:
        """Whether text is held back (it may start a stop string)."""
        return bool(self._held)

    def flush(self) -> str:
        """What was held back, once generation ended without completing a stop string."""
        held, self._held = self._held, ""
        return held
