"""Screenshots for the README, taken by the browser tests that assert what they show: always
into the test run's log folder, and, with `README_SCREENSHOTS=1` (`make screenshots`), into
`docs/screenshots/`, which the README shows. Only on request, so that an ordinary run of the
suite leaves the checkout as it was. Reduced to 64 colours: a page of flat colours stays
readable at a fraction of the bytes."""

import os
import re
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, expect

from devstack import ROOT

SHOTS = ROOT / "docs" / "screenshots"
COLOURS = 64


def readme_shot(page: Page, name: str, log_dir: Path, sidebar: bool = True) -> None:
    """The whole of `page` as it is now (transitions run to their end) as `name`.png; without
    `sidebar`, the conversations' sidebar folded first (a tab other than the chat's needs the width)."""
    if not sidebar:
        bar, opened = page.locator("#hearth-sidebar"), re.compile(r"\bopen\b")
        expect(bar).to_have_class(opened)  # drawn open a moment after sign-in: fold it once it is
        bar.locator(".toggle-button").click()
        expect(bar).not_to_have_class(opened)
    taken = log_dir / f"{name}.png"
    page.screenshot(path=str(taken), full_page=True, animations="disabled")
    if os.environ.get("README_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(taken) as image:
            image.convert("RGB").quantize(colors=COLOURS).save(SHOTS / f"{name}.png", optimize=True)
