"""The Status tab: who is waiting, what runs and how fast, recent jobs, and plots of the last
hour. It reads the api's `GET /v1/status` with this session's key (an admin sees every job, a
user their own) every `REFRESH_S` seconds, and only while the tab is open."""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ui.client import ApiError, HearthClient

REFRESH_S = 5.0
SPAN_S = 3600  # the plots show the last hour (what the api keeps)
# The api samples queue depth every `series.sample_s`; a slot or two can be skipped (its loop
# sleeps after the work), more missing means no api sampled: the line breaks there.
GAP_SAMPLES = 3
TAB = "Status"
CLOSED = "Open this tab to see the queue."

QUEUE_COLUMNS = ["position", "queue", "user", "waiting (s)", "job"]
RECENT_COLUMNS = ["finished", "user", "outcome", "queue wait (s)", "first token (s)", "tokens/s", "prompt tokens", "cached", "completion tokens", "job"]
# Local time (the browser's) on a 24-hour clock.
TIME_AXIS: dict[str, Any] = {"x_title": "local time", "x_axis_format": "%H:%M", "height": 220}
Status = dict[str, Any]
Plots = tuple[gr.LinePlot, gr.ScatterPlot, gr.ScatterPlot]
Views = tuple[str, pd.DataFrame, pd.DataFrame, gr.LinePlot, gr.ScatterPlot, gr.ScatterPlot]


def _clock(unix: float | None) -> str:
    return "" if unix is None else time.strftime("%H:%M:%S", time.localtime(unix))


def _num(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _times(values: list[float]) -> pd.Series:
    # Instants (UTC); Gradio sends them as epoch ms and the browser's Vega draws them in its local
    # time, the household's. A naive local time would be shifted twice.
    return pd.to_datetime(pd.Series(values, dtype="float64"), unit="s", utc=True)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def summary(status: Status) -> str:
    workers = status["workers"]
    busy = sum(w["state"] == "busy" for w in workers)
    waiting = ", ".join(f"{queue} {n}" for queue, n in status["queues"].items())
    lines = [f"**Workers:** {busy} busy, {len(workers) - busy} idle" + (" — no worker is running; requests wait." if not workers else ""),
             f"**Waiting:** {waiting}"]
    for w in workers:
        loaded = w.get("loaded", [w["model"]])  # in bold: held in memory now
        models = ", ".join(f"**{m}**" if m in loaded else m for m in w.get("models") or [w["model"]])
        gpu = f", {w['gpu_layers']} GPU layers" if w.get("gpu_layers") else ""
        states = f"; saved states {_mib(w.get('state_memory_bytes', 0))} in memory, {_mib(w.get('state_disk_bytes', 0))} on disk"
        lines.append(f"**Worker** {w['name']} on {w.get('host') or '?'}: {models}; {w.get('threads', '?')} threads{gpu}; {w['state']}{states}")
    for job in status["running"]:
        who = f"job `{job['id'][:8]}` ({job['user']})" if job["id"] else "another user's job"
        speed = f"{job['tokens_per_s']:.1f} tokens/s" if job["tokens_per_s"] is not None else "reading the prompt"
        lines.append(f"**Running:** {who} on {job['worker']}: {job['tokens']} tokens, {speed}")
    return "  \n".join(lines)


def queue_table(status: Status) -> pd.DataFrame:
    rows = [[j["position"], j["queue"], j["user"], j["waiting_s"], j["id"]] for j in status["queued"]]
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def recent_table(status: Status) -> pd.DataFrame:
    rows = [[_clock(r["finished_at"]), r["user"], r["outcome"], _num(r["queue_wait_s"]), _num(r["ttft_s"]),
             _num(r["tokens_per_s"]), r["prompt_tokens"], r["cached_tokens"], r["completion_tokens"], r["id"]]
            for r in status["recent"]]
    return pd.DataFrame(rows, columns=RECENT_COLUMNS)


def depth_series(status: Status) -> pd.DataFrame:
    """Waiting jobs per queue; where no api sampled for `GAP_SAMPLES` periods (none ran), a row
    without a value in the middle of the gap breaks each queue's line there."""
    series = status["series"]
    gap_s = GAP_SAMPLES * series["sample_s"]
    queues = list(status["queues"])
    rows: list[tuple[float, str, float | None]] = []
    for before, sample in zip([None, *series["queue_depth"]], series["queue_depth"]):
        if before is not None and sample["t"] - before["t"] > gap_s:
            rows += [((before["t"] + sample["t"]) / 2, q, None) for q in queues]
        rows += [(sample["t"], q, sample.get(q, 0)) for q in queues]
    frame = pd.DataFrame(rows, columns=["time", "queue", "waiting"]).astype({"queue": "string", "waiting": "float64"})
    frame["time"] = _times(frame["time"].tolist())
    return frame


def job_series(status: Status, field: str, column: str) -> pd.DataFrame:
    points = [p for p in status["series"]["jobs"] if p[field] is not None]
    return pd.DataFrame({"time": _times([p["t"] for p in points]), column: [float(p[field]) for p in points]})


def _top(values: pd.Series, least: float) -> float:
    """The top of a y axis from zero: a margin above the highest mark, which Vega would clip."""
    return max([least, *(1.1 * values.dropna())])


def plots(status: Status) -> Plots:
    """The plots over the whole last hour, whatever the data covers, so that the time axis reads
    the same each time. A new span also makes Gradio redraw a plot rather than only swap its data,
    which keeps the legend's queues those of the data."""
    span = [status["now"] - SPAN_S, status["now"] + SPAN_S / 60]  # a margin: Vega clips a mark on the edge
    depth = depth_series(status)
    speed, first = job_series(status, "tokens_per_s", "tokens/s"), job_series(status, "ttft_s", "seconds")
    # Vega draws about one tick per 40 px: on a 0..4 scale or more, the ticks are whole jobs.
    return (gr.LinePlot(depth, x_lim=span, y_lim=[0, _top(depth["waiting"], 4)]),
            gr.ScatterPlot(speed, x_lim=span, y_lim=[0, _top(speed["tokens/s"], 1)]),
            gr.ScatterPlot(first, x_lim=span, y_lim=[0, _top(first["seconds"], 1)]))


def views(status: Status) -> Views:
    return (summary(status), queue_table(status), recent_table(status), *plots(status))


def nothing() -> Status:
    """A status with no worker, queue or job."""
    return {"now": time.time(), "workers": [], "queues": {}, "running": [], "queued": [], "recent": [],
            "series": {"queue_depth": [], "jobs": [], "sample_s": 0}}


def empty_views(message: str) -> Views:
    return (message, *views(nothing())[1:])


def make_refresh(client: HearthClient) -> Callable[[str | None], Awaitable[tuple[Status | None, *Views]]]:
    """The api's status (None when it refused), and what shows it."""
    async def refresh_status(api_key: str | None) -> tuple[Status | None, *Views]:
        try:
            status = await client.with_key(api_key).status()
        except ApiError as exc:
            return None, *empty_views(f"⚠️ {exc.message}")
        return status, *views(status)

    return refresh_status


def redraw(status: Status | None) -> Plots:
    """The plots of `status` once more, after each refresh (see `status_tab`). Their span ends a
    millisecond later: a new span makes Gradio rebuild each chart (with the value the refresh
    left) rather than only swap its rows, which would keep the legend it had."""
    return plots({**status, "now": status["now"] + 1e-3} if status else nothing())


@dataclass(frozen=True)
class StatusTab:
    tab: gr.Tab
    timer: gr.Timer
    outputs: list[gr.components.Component]  # what `empty_views` and `views` fill, in order

    def reset(self) -> dict[gr.blocks.Block, Any]:
        """Updates that stop the polling and forget what was shown (for a sign-out)."""
        return {self.timer: gr.Timer(active=False), **dict(zip(self.outputs, empty_views(CLOSED), strict=True))}


def status_tab(client: HearthClient, api_key: gr.State, tabs: gr.Tabs) -> StatusTab:
    """The tab, added inside `tabs` (being built); it polls only while it is the open one."""
    with gr.Tab(TAB, id="status") as tab:
        overview = gr.Markdown(CLOSED)
        # A line for the sampled queue depth, full width for its legend (a queue a line); a point per
        # job for what is measured once a job (a line between two jobs would invent the speed in between).
        depth = gr.LinePlot(x="time", y="waiting", color="queue", title="Waiting jobs (last hour)",
                            y_title="jobs waiting", color_title="queue", **TIME_AXIS)
        with gr.Row():
            speed = gr.ScatterPlot(x="time", y="tokens/s", title="Generation speed (last hour)", y_title="tokens/s", **TIME_AXIS)
            first = gr.ScatterPlot(x="time", y="seconds", title="Time to first token (last hour)", y_title="seconds", **TIME_AXIS)
        queue = gr.Dataframe(value=pd.DataFrame(columns=QUEUE_COLUMNS), label="Queue", interactive=False)
        recent = gr.Dataframe(value=pd.DataFrame(columns=RECENT_COLUMNS), label="Recent jobs", interactive=False)
        timer = gr.Timer(REFRESH_S, active=False)
        shown = gr.State(None)  # the status last shown, for `redraw`
    outputs = [overview, queue, recent, depth, speed, first]
    refresh = make_refresh(client)
    # Gradio (6.31) applies an update's properties one at a time, the value last, and a plot
    # rebuilds its chart (asynchronously) when its span changes: a refresh's chart can miss that
    # refresh's value. The refresh that opens the tab drew the axes and no point, until the next.
    # Drawn once more after each refresh, from the status it fetched, the plots show its points.
    for event in (timer.tick, tab.select):
        event(refresh, inputs=[api_key], outputs=[shown, *outputs], show_progress="hidden").then(
            redraw, inputs=[shown], outputs=[depth, speed, first], show_progress="hidden", api_visibility="private")

    def poll_while_open(event: gr.SelectData) -> gr.Timer:
        return gr.Timer(active=event.value == TAB)

    tabs.select(poll_while_open, outputs=timer, show_progress="hidden", api_visibility="private")
    return StatusTab(tab, timer, outputs)
