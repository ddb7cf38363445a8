"""`python -m hearth.supervise`, what `make run` runs: the Procfile's processes under
supervisord, in the foreground.

A process that dies (the kernel's OOM killer, a crash) is restarted while the others keep
serving: at once if it had been up for `START_S`, else after a delay that grows by a second at
each quick failure, until it stays up or `RETRIES` retries have failed (then supervisord logs
`gave up: NAME entered FATAL state`). supervisord logs each `exited: NAME (...)` and
`spawned: 'NAME' with pid N`. Ctrl-C stops every process, each in its own process group with
all it started, SIGKILL after `STOP_WAIT_S`.

The Procfile stays the one list of processes (compose.yaml runs the same commands); this
module writes supervisord's configuration from it into HEARTH_DATA. With REDIS_URL set, Redis
is someone else's and the `redis` process is left out.
"""

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from hearth.settings import data_dir

PROCFILE = Path("Procfile")
REDIS_PROCESS = "redis"
START_S = 10  # up this long = started; a quicker death counts as a failed start, backed off
RETRIES = 10  # retries of quick failures (after 1, 2, … 10 s) before giving up
STOP_WAIT_S = 15  # the worker stops between two tokens; the api and ui drain their streams


def read_procfile(text: str) -> dict[str, str]:
    """`name: command` lines; blank lines and `#` comments are skipped."""
    processes = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, command = line.partition(":")
            if not sep or not name.strip() or not command.strip():
                raise ValueError(f"Procfile: expected `name: command`, got {line!r}")
            processes[name.strip()] = command.strip()
    return processes


def _value(text: str) -> str:
    return text.replace("%", "%%")  # supervisord expands %(name)s in every value


def supervisord_conf(processes: dict[str, str], directory: Path, state: Path, as_root: bool) -> str:
    lines = [
        "[supervisord]",
        "nodaemon=true",
        # Its own log goes to the console (nodaemon echoes it there), not to a file.
        "logfile=/dev/null",
        "logfile_maxbytes=0",
        f"pidfile={_value(str(state / 'supervisord.pid'))}",
        # Run as root already: say so, instead of supervisord's warning at every start.
        *(["user=root"] if as_root else []),
    ]
    for priority, (name, command) in enumerate(processes.items(), start=1):
        lines += [
            "",
            f"[program:{name}]",
            f"command={_value(command)}",
            f"directory={_value(str(directory))}",
            f"priority={priority}",  # started in the Procfile's order, stopped in reverse
            "autorestart=true",
            f"startsecs={START_S}",
            f"startretries={RETRIES}",
            "stopsignal=TERM",
            f"stopwaitsecs={STOP_WAIT_S}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            "stdout_logfile=/dev/stdout",
            "stdout_logfile_maxbytes=0",
        ]
    return "\n".join(lines) + "\n"


def selected(processes: dict[str, str], external_redis: bool) -> dict[str, str]:
    return {name: cmd for name, cmd in processes.items() if not (external_redis and name == REDIS_PROCESS)}


def supervisord_args(conf: Path) -> list[str]:
    return [sys.executable, "-m", "supervisor.supervisord", "--configuration", str(conf)]


def write_conf(procfile: Path, env: Mapping[str, str]) -> Path:
    state = data_dir(env)
    state.mkdir(parents=True, exist_ok=True)
    processes = selected(read_procfile(procfile.read_text()), external_redis=bool(env.get("REDIS_URL")))
    conf = state / "supervisord.conf"
    conf.write_text(supervisord_conf(processes, procfile.resolve().parent, state.resolve(), as_root=os.geteuid() == 0))
    return conf


def main() -> None:
    conf = write_conf(PROCFILE, os.environ)
    args = supervisord_args(conf)
    sys.stdout.flush()
    os.execv(args[0], args)  # supervisord takes this pid: Ctrl-C and `kill` reach it directly


if __name__ == "__main__":
    main()
