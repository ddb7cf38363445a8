"""The README stays true to the code: its settings table, its first commands, its endpoints."""

import re
import shlex
from pathlib import Path

from api.app import create_app
from api.settings import ApiSettings
from hearth.settings import settings_table
from ui.settings import UiSettings
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
_PARAM = re.compile(r"\{\w+\}")  # `/v1/jobs/{job_id}` is written `/v1/jobs/{id}`
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def test_settings_table_matches_the_settings_classes() -> None:
    assert README.count(START) == 1 and README.count(END) == 1, f"README needs one {START} … {END} block"
    block = README.split(START, 1)[1].split(END, 1)[0].strip()
    expected = settings_table(ApiSettings, WorkerSettings, UiSettings)
    assert block == expected, (
        "README's settings table differs from the settings classes: run `make settings-table`, "
        "which rewrites it"
    )


def test_makefile_has_the_settings_table_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^settings-table:.*\n\t.*-m hearth\.settings README\.md$", makefile, re.M)


def test_readme_starts_with_make_run_and_make_test() -> None:
    before_first_section = README.split("\n## ", 1)[0]
    blocks = re.findall(r"^```\w*\n(.*?)^```", before_first_section, re.M | re.S)
    assert blocks, "README must open with a code block of its commands"
    commands = [line.strip() for line in blocks[0].splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_ci_runs_make_test() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [shlex.split(line, comments=True) for line in lines if not line.lstrip().startswith("#")]
    assert ["make", "test"] in commands


def test_every_endpoint_is_documented() -> None:
    """A route added to the api without a line in the README fails here."""
    paths = create_app(ApiSettings()).openapi()["paths"]
    documented = set(re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`\s]*)`", README))
    served = {f"{method.upper()} {_PARAM.sub('{id}', path)}" for path, ops in paths.items() for method in ops}
    assert served >= {"POST /v1/chat/completions", "GET /healthz"}  # the routes are seen at all
    assert not served - documented, f"README.md does not document {sorted(served - documented)}"


def test_every_screenshot_is_shown_and_every_one_shown_is_there() -> None:
    """docs/screenshots/ holds what the README shows, each made by a browser test (tests/screenshots.py)."""
    shown = set(re.findall(r'src="docs/screenshots/([\w-]+\.png)"', README))
    taken = {p.name for p in (ROOT / "docs" / "screenshots").glob("*.png")}
    assert shown and shown == taken
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_ui*.py"))
    assert shown == {f"{name}.png" for name in re.findall(r'readme_shot\(\w+, "([\w-]+)"', tests)}
