"""The soak: warm up (each person does each thing once), take the baselines, run mixed traffic
from several people until the time is up, then check what it left behind."""

import threading
import time
from dataclasses import dataclass, field

import httpx

from devstack import Stack, add_user
from soak.ledger import Ledger
from soak.residue import KeyCount, leftover, persistent_keys, rss_mib, wait_for_baseline, without_ttl
from soak.traffic import DEADLINE_S, Person

RSS_TOLERANCE = 0.10  # of the warmed-up level
PROCESS_KEYS = {"rq:clean_groups"}  # RQ's workers take it, with a TTL, to clean their registries now and then


@dataclass
class Report:
    seconds: float
    people: int
    ledger: Ledger
    rss: dict[str, tuple[float, float]] = field(default_factory=dict)  # process -> (warmed up, end) MiB
    no_ttl: list[str] = field(default_factory=list)
    keys: KeyCount | None = None
    left: list[str] = field(default_factory=list)
    still_serving: str = ""

    @property
    def rss_ok(self) -> bool:
        return all(end <= warm * (1 + RSS_TOLERANCE) for warm, end in self.rss.values())

    @property
    def keys_ok(self) -> bool:
        return not self.no_ttl and self.keys is not None and self.keys.final <= self.keys.baseline

    @property
    def ok(self) -> bool:
        return self.ledger.all_accounted and self.rss_ok and self.keys_ok and self.still_serving.startswith("yes")

    def render(self) -> str:
        lines = [f"soak: {self.seconds:.0f} s of traffic from {self.people} people", self.ledger.render()]
        lines.append(f"worker still serving: {self.still_serving}")
        for name, (warm, end) in self.rss.items():
            lines.append(f"{name} RSS: {end:.1f} MiB at the end, {warm:.1f} MiB warmed up ({(end / warm - 1) * 100:+.1f} %)")
        k = self.keys
        if k is not None:
            lines.append(f"redis keys: baseline {k.baseline}, {k.after_traffic} after the traffic, {k.final} after "
                         f"{k.waited_s:.0f} s of waiting for TTLs")
        lines.append(f"keys without a TTL (not in the baseline): {len(self.no_ttl)}")
        lines += [f"  {key}" for key in self.no_ttl[:20]]
        if self.left:
            lines.append("keys left over:")
            lines += [f"  {key}" for key in self.left[:20]]
        lines.append("OK" if self.ok else "NOT OK")
        return "\n".join(lines)


def in_parallel(people: list[Person], work: str, until: float = 0) -> None:
    def one(person: Person) -> None:
        if work == "warm-up":
            for action in person.actions:
                person.act(action)
        else:
            person.run(until)

    threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def still_serving(stack: Stack, key: str) -> str:
    r = httpx.post(f"{stack.base_url}/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=DEADLINE_S,
                   json={"model": "any", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4})
    if r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1:
        return f"yes ({r.json()['usage']['completion_tokens']} tokens)"
    return f"no: {r.status_code} {r.text[:200]}"


def soak(stack: Stack, seconds: float, people: int, seed: int, keys_deadline_s: float, max_tokens: int = 8) -> Report:
    """`stack` runs with AUTH on; its JOB_TTL_S and FILE_RETENTION_S bound `keys_deadline_s`.
    The baselines are taken after a warm-up: the memory of the processes once each kind of
    request has been served, and the Redis keys that hold no job's data (those without a TTL,
    and the processes' own)."""
    ledger = Ledger()
    crowd = [Person(stack.base_url, f"soak{i}", add_user(stack, f"soak{i}"), ledger, seed + i, max_tokens) for i in range(people)]
    checker = add_user(stack, "soak-check")  # before the baseline: its account is not the traffic's
    # Keys of the living processes (heartbeats, the housekeeping lease), renewed with a TTL.
    processes = {key.decode() for key in stack.redis.scan_iter(count=1000)} | PROCESS_KEYS
    assert stack.api is not None
    pids = {"api": stack.api.popen.pid, "worker": stack.workers[0].popen.pid}
    in_parallel(crowd, "warm-up")
    warm = {name: rss_mib(pid) for name, pid in pids.items()}
    baseline = persistent_keys(stack.redis) | processes
    start = time.monotonic()
    in_parallel(crowd, "traffic", until=start + seconds)
    report = Report(time.monotonic() - start, people, ledger)
    report.still_serving = still_serving(stack, checker)
    report.rss = {name: (warm[name], rss_mib(pid)) for name, pid in pids.items()}
    report.no_ttl = without_ttl(stack.redis, baseline)
    report.keys = wait_for_baseline(stack.redis, baseline, keys_deadline_s)
    report.left = leftover(stack.redis, baseline)
    return report
