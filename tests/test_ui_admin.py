"""The Admin, Account and Shared tabs in a real browser: an admin adds a person whose key,
shown once, signs them in in a second browser; revoking them, after the page says what that
deletes, signs their page out. A person's own keys, password, usage and sessions. A
conversation shared with another person, read and continued as their own copy."""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from devstack import RedisServer, Stack, add_user, serve
from tests.screenshots import readme_shot
from tests.test_ui import (  # noqa: F401  # fixtures
    BOT,
    SIGN_OUT,
    SIGNIN,
    SIGNIN_MESSAGE,
    Ui,
    ask,
    browser,
    new_page,
    no_error_details,
    send,
    sign_in,
    signed_in,
    type_number,
    users,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def secured(redis_server: RedisServer, log_dir: Path) -> Iterator[Stack]:
    yield from serve(redis_server, log_dir, AUTH="on", DEFAULT_MAX_TOKENS="8")


@pytest.fixture(scope="module")
def secured_ui(secured: Stack, log_dir: Path) -> Iterator[Ui]:
    u = Ui(secured.env, log_dir)
    yield u
    u.stop()


def choose(page: Page, dropdown: str, option: str) -> None:
    page.click(f"{dropdown} input")
    page.get_by_role("option", name=option, exact=True).click()


def choose_person(page: Page, option: str, whose: str) -> None:
    """Chooses a person (or everyone) and waits until the limit boxes hold theirs."""
    choose(page, "#hearth-admin-chosen", option)
    expect(page.locator("#hearth-admin-limits-of")).to_have_text(whose)


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def no_admin_tab(page: Page) -> None:
    expect(page.get_by_role("tab", name="Account")).to_be_visible()  # the tabs are drawn
    expect(page.get_by_role("tab", name="Admin")).to_have_count(0)
    expect(page.locator("#hearth-admin-add")).to_have_count(0)


def admin_tab_works(page: Page, admin: str) -> None:
    """The Admin tab, drawn once, opens on its first click and does what it shows."""
    expect(page.get_by_role("tab", name="Admin")).to_have_count(1)
    open_tab(page, "Admin")
    expect(page.locator("#hearth-admin-people")).to_contain_text(admin)
    expect(page.locator("#hearth-admin-add")).to_be_visible()
    page.click("#hearth-admin-reset-password")
    expect(page.locator("#hearth-admin-message")).to_have_text("Choose a person first.")


def test_admin_tab_is_shown_to_admins_only_and_opens_on_the_first_click(secured: Stack, secured_ui: Ui,
                                                                         new_page: Callable[[str], Page]) -> None:  # noqa: F811
    """One browser, people taking turns: the tab appears and goes with who signs in (as the
    form, as a reload), and each time it appears its first click opens it."""
    keys = {"ada": add_user(secured, "ada", admin=True), "rue": add_user(secured, "rue")}
    page = new_page(secured_ui.url)
    for turn, name in enumerate(["rue", "ada", "rue", "ada"]):
        if turn:
            page.click(SIGN_OUT)
        sign_in(page, name, keys[name])
        signed_in(page, name)
        if name == "rue":
            no_admin_tab(page)
            continue
        admin_tab_works(page, "ada")
        page.reload()  # signed in again from what the browser kept, by the page's load
        signed_in(page, "ada")
        admin_tab_works(page, "ada")
    no_error_details(page)


def test_admin_adds_a_person_who_signs_in_elsewhere_and_is_revoked(secured: Stack, secured_ui: Ui,
                                                                   new_page: Callable[[str], Page], log_dir: Path) -> None:  # noqa: F811
    root = add_user(secured, "root", admin=True)
    admin = new_page(secured_ui.url)
    sign_in(admin, "root", root)
    signed_in(admin, "root")
    open_tab(admin, "Admin")
    expect(admin.locator("#hearth-admin-people")).to_contain_text("root")
    admin.fill("#hearth-admin-new-name input", "pia")
    admin.click("#hearth-admin-add")
    expect(admin.locator("#hearth-admin-message")).to_contain_text("Added pia")
    secret = admin.locator("#hearth-admin-secret")
    key = secret.locator("input, textarea").first.input_value()
    assert key.startswith("hk-")
    expect(secret.get_by_role("button", name="Copy")).to_be_visible()  # the copy button beside the key
    expect(admin.locator("#hearth-admin-people")).to_contain_text("pia")
    admin.screenshot(path=str(log_dir / "ui-admin-added.png"), full_page=True)

    # A second browser: pia signs in with the key shown once; she has no Admin tab.
    pia = new_page(secured_ui.url)
    sign_in(pia, "pia", key)
    signed_in(pia, "pia")
    no_admin_tab(pia)
    assert httpx.get(f"{secured.base_url}/admin/users", headers={"Authorization": f"Bearer {key}"}).status_code == 403

    # Limits: hers, then everyone's default; choosing someone shows their own.
    choose_person(admin, "pia", "Limits of pia:")
    type_number(admin, "#hearth-admin-tokens_per_day input", "5000")
    admin.click("#hearth-admin-set-limits")
    expect(admin.locator("#hearth-admin-message")).to_have_text("Limits set for pia.")
    choose_person(admin, "Everyone (default limits)", "Everyone's default limits:")
    expect(admin.locator("#hearth-admin-tokens_per_day input")).to_have_value("")
    type_number(admin, "#hearth-admin-jobs_at_once input", "3")
    admin.click("#hearth-admin-set-limits")
    expect(admin.locator("#hearth-admin-message")).to_have_text("Default limits set for everyone.")
    quotas = httpx.get(f"{secured.base_url}/admin/quotas", headers={"Authorization": f"Bearer {root}"}).json()
    assert quotas["default"]["jobs_at_once"] == 3 and quotas["people"]["pia"]["tokens_per_day"] == 5000
    assert httpx.put(f"{secured.base_url}/admin/quotas/default", json={}, headers={"Authorization": f"Bearer {root}"}).status_code == 200

    # Revoke: what it deletes is said first, then it happens and her page signs out by itself.
    choose_person(admin, "pia", "Limits of pia:")
    expect(admin.locator("#hearth-admin-tokens_per_day input")).to_have_value("5000")
    admin.click("#hearth-admin-revoke")
    expect(admin.locator("#hearth-admin-preview")).to_contain_text("Revoking pia deletes 1 API key(s), signs out 1 open session(s)")
    assert httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200  # not yet
    readme_shot(admin, "admin", log_dir, sidebar=False)
    admin.click("#hearth-admin-confirm")
    expect(admin.locator("#hearth-admin-message")).to_contain_text("Revoked pia")
    expect(admin.locator("#hearth-admin-people")).not_to_contain_text("pia")
    expect(pia.locator(SIGNIN_MESSAGE)).to_contain_text("Your session has ended", timeout=30_000)
    no_error_details(admin)


def test_account_tab_shows_usage_and_manages_keys_password_and_sessions(secured: Stack, secured_ui: Ui,
                                                                        new_page: Callable[[str], Page], log_dir: Path) -> None:  # noqa: F811
    key = add_user(secured, "quinn")
    users(secured, "quota", "quinn", "--tokens-per-day", "100000")
    other = new_page(secured_ui.url)  # a second session, to be signed out with this one
    sign_in(other, "quinn", key)
    signed_in(other, "quinn")
    page = new_page(secured_ui.url)
    sign_in(page, "quinn", key)
    signed_in(page, "quinn")
    open_tab(page, "Account")
    usage = page.locator("#hearth-account-usage")
    expect(usage).to_contain_text("Today")
    expect(usage).to_contain_text("100000 of 100000 tokens today left")
    expect(page.locator("#hearth-account-keys")).to_contain_text("first key")
    readme_shot(page, "account", log_dir, sidebar=False)

    page.fill("#hearth-account-key-name input", "laptop")
    page.click("#hearth-account-create-key")
    expect(page.locator("#hearth-account-keys")).to_contain_text("laptop")
    new_key = page.locator("#hearth-account-new-key").locator("input, textarea").first.input_value()
    assert new_key.startswith("hk-")
    assert httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {new_key}"}).status_code == 200
    choose(page, "#hearth-account-key-choice", next(o for o in page_key_options(secured, key) if o.startswith("laptop")))
    page.click("#hearth-account-revoke-key")
    expect(page.locator("#hearth-account-message")).to_contain_text("revoked")
    assert httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {new_key}"}).status_code == 401

    page.fill("#hearth-account-new input", "short")
    page.click("#hearth-account-change-password")
    expect(page.locator("#hearth-account-message")).to_contain_text("at least 8 characters")
    page.fill("#hearth-account-new input", "quinn's new password")
    page.click("#hearth-account-change-password")
    expect(page.locator("#hearth-account-message")).to_have_text("Password changed.")
    assert httpx.post(f"{secured.base_url}/login", json={"username": "quinn", "password": "quinn's new password"}).status_code == 200

    page.click("#hearth-account-sign-out-everywhere")
    expect(page.locator(SIGNIN_MESSAGE)).to_contain_text("signed out everywhere")
    expect(other.locator(SIGNIN)).to_be_visible(timeout=30_000)  # the other browser, on its next check
    assert httpx.get(f"{secured.base_url}/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200  # keys stay
    no_error_details(page)


def page_key_options(stack: Stack, key: str) -> list[str]:
    """The Account tab's labels of the person's keys: "name (id)"."""
    keys = httpx.get(f"{stack.base_url}/account/keys", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    return [f"{k['name'] or '(unnamed)'} ({k['id']})" for k in keys]


def test_shared_tab_shares_a_conversation_that_the_other_reads_and_copies(secured: Stack, secured_ui: Ui,
                                                                           new_page: Callable[[str], Page], log_dir: Path) -> None:  # noqa: F811
    hana, ivo = add_user(secured, "hana"), add_user(secured, "ivo")
    made = httpx.post(f"{secured.base_url}/conversations", headers={"Authorization": f"Bearer {hana}"},
                      json={"metadata": {"title": "Soup"}, "items": [{"type": "message", "role": "user", "content": [
                          {"type": "input_text", "text": "Our soup recipe?"},
                          {"type": "input_file", "file_id": "file-0123", "filename": "soup *notes*.pdf"}]}]})
    conv = made.json()["id"]
    owner = new_page(secured_ui.url)
    sign_in(owner, "hana", hana)
    signed_in(owner, "hana")
    open_tab(owner, "Shared")
    choose(owner, "#hearth-shared-mine", "Soup")
    expect(owner.locator("#hearth-shared-grantees")).to_have_text("Not shared.")
    owner.fill("#hearth-shared-with input", "ivo")
    owner.click("#hearth-shared-share")
    expect(owner.locator("#hearth-shared-grantees")).to_have_text("Shared with ivo.")

    reader = new_page(secured_ui.url)
    sign_in(reader, "ivo", ivo)
    signed_in(reader, "ivo")
    open_tab(reader, "Shared")
    choose(reader, "#hearth-shared-chosen", "Soup — hana's")
    expect(reader.locator("#hearth-shared-reading")).to_contain_text("Our soup recipe?")
    # The file the question attached shows as a chip, as on the chat page, its name as written.
    expect(reader.locator("#hearth-shared-reading strong")).to_have_text("soup *notes*.pdf")
    expect(reader.locator("#hearth-shared-reading")).to_contain_text("📎 soup *notes*.pdf")
    readme_shot(reader, "shared", log_dir, sidebar=False)
    reader.click("#hearth-shared-fork")
    expect(reader.locator("#hearth-shared-message")).to_contain_text("is now among your chats")
    mine = httpx.get(f"{secured.base_url}/conversations", headers={"Authorization": f"Bearer {ivo}"}).json()["data"]
    assert [c["metadata"] for c in mine] == [{"title": "Soup", "forked_from": f"hana/{conv}"}]

    owner.click("#hearth-shared-stop")
    expect(owner.locator("#hearth-shared-grantees")).to_have_text("Not shared.")
    assert httpx.get(f"{secured.base_url}/shared", headers={"Authorization": f"Bearer {ivo}"}).json()["data"] == []
    no_error_details(reader)


def test_chat_page_says_what_is_left_near_a_limit_and_when_it_is_reached(secured: Stack, secured_ui: Ui, boss: str,
                                                                          new_page: Callable[[str], Page], log_dir: Path) -> None:  # noqa: F811
    noor = add_user(secured, "noor")
    page = new_page(secured_ui.url)
    sign_in(page, "noor", noor)
    signed_in(page, "noor")
    ask(page, secured_ui, "Hi")
    line = page.locator("#hearth-quota-line")
    expect(line).to_have_text("")  # no limit: nothing to say
    admin = {"Authorization": f"Bearer {boss}"}
    used = httpx.get(f"{secured.base_url}/usage?user=noor", headers=admin).json()["today"]["total"]["tokens"]
    limit = used + 5  # 5 left: under a fifth of the limit
    assert httpx.put(f"{secured.base_url}/admin/users/noor/quota", json={"tokens_per_day": limit}, headers=admin).status_code == 200

    page.reload()  # the line is read at sign-in and after each answer
    signed_in(page, "noor")
    expect(line).to_contain_text(f"⚠️ 5 of {limit} tokens today left (resets ")
    readme_shot(page, "near-limit", log_dir)
    ask(page, secured_ui, "Once more")  # admitted under the limit, and finished past it
    expect(line).to_contain_text(f"⛔ 0 of {limit} tokens today left")
    send(page, "And again")
    expect(page.locator(BOT).last).to_contain_text(f"You have used your tokens for today (tokens_per_day = {limit}); it resets at ")
    open_tab(page, "Account")  # the same, with the day's usage
    usage = page.locator("#hearth-account-usage")
    expect(usage).to_contain_text(f"Today ({datetime.now(UTC).date()}, UTC): 2 requests, ")
    expect(usage).to_contain_text(f"⛔ 0 of {limit} tokens today left")
    readme_shot(page, "usage", log_dir, sidebar=False)
    no_error_details(page)
