"""Conversations kept on the server: OpenAI's Conversations API through the official client,
Hearth's list, search, export and import, privacy between users, caps, and persistence."""

import asyncio
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.pagination import SyncConversationCursorPage
from openai.types.conversations import Conversation, Message
from redis.asyncio import Redis as AsyncRedis

from api.conversations.schemas import chat_history, message
from api.conversations.store import ConversationStore
from api.settings import ApiSettings
from devstack import ROOT, RedisServer, Stack, add_user

_names = itertools.count()


def api_only(redis_server: RedisServer, log_dir, db: int | None = None, **env: str) -> Stack:
    """Conversations never reach a worker: an api alone serves them."""
    s = Stack(redis_server, db, log_dir, **env)
    s.start_api()
    return s


@pytest.fixture(scope="module")
def secured(redis_server, log_dir) -> Iterator[Stack]:
    s = api_only(redis_server, log_dir, AUTH="on")
    yield s
    s.stop()


def as_user(stack: Stack, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30)


def new_user(stack: Stack, admin: bool = False) -> tuple[str, openai.OpenAI]:
    """A fresh user per test, so each test sees only its own conversations."""
    name = f"user{next(_names)}"
    return name, as_user(stack, add_user(stack, name, admin=admin))


def say(role: str, text: str) -> dict[str, str]:
    return {"type": "message", "role": role, "content": text}


def texts(items: list) -> list[str]:
    return [part.text for item in items for part in item.content]


def listed(client: openai.OpenAI, **params: object) -> SyncConversationCursorPage[Conversation]:
    """`GET /v1/conversations` (Hearth's own), paged by the client's own cursor page."""
    return client.get_api_list("/conversations", page=SyncConversationCursorPage[Conversation], model=Conversation,
                               options={"params": params})


def test_create_retrieve_update_delete(secured: Stack) -> None:
    _, client = new_user(secured)
    conv = client.conversations.create(items=[say("user", "How do I bake sourdough bread?")], metadata={"topic": "food"})
    assert conv.object == "conversation" and conv.id.startswith("conv_") and conv.created_at > 0
    assert conv.metadata == {"topic": "food", "title": "How do I bake sourdough bread?"}
    assert client.conversations.retrieve(conv.id) == conv
    renamed = client.conversations.update(conv.id, metadata={"title": "Bread"})
    assert renamed.metadata == {"title": "Bread"} and client.conversations.retrieve(conv.id).metadata == {"title": "Bread"}
    deleted = client.conversations.delete(conv.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (conv.id, "conversation.deleted", True)
    with pytest.raises(openai.NotFoundError) as err:
        client.conversations.retrieve(conv.id)
    assert err.value.code == "conversation_not_found"
    with pytest.raises(openai.NotFoundError):
        client.conversations.delete(conv.id)


def test_titles_come_from_the_first_user_message_unless_set(secured: Stack) -> None:
    _, client = new_user(secured)
    empty = client.conversations.create()
    assert empty.metadata == {}
    long = "Please explain   in detail how the moon's gravity causes the tides in the oceans of the earth"
    client.conversations.items.create(empty.id, items=[say("system", "Be brief."), say("user", long), say("user", "And the sun?")])
    title = client.conversations.retrieve(empty.id).metadata["title"]
    assert title.endswith("…") and len(title) <= 60 and long.replace("   ", " ").startswith(title[:-1])
    named = client.conversations.create(items=[say("user", "hello")], metadata={"title": "Mine"})
    client.conversations.items.create(named.id, items=[say("user", "more")])
    assert client.conversations.retrieve(named.id).metadata == {"title": "Mine"}


def test_items_add_list_page_order_and_delete(secured: Stack) -> None:
    _, client = new_user(secured)
    conv = client.conversations.create(items=[say("user", "one")])
    added = client.conversations.items.create(conv.id, items=[
        say("assistant", "two"),
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "three"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "four", "annotations": []}]},  # type: ignore[misc]  # openai: fits two TypedDicts
        say("user", "five"),
    ])
    assert added.object == "list" and texts(added.data) == ["two", "three", "four", "five"] and added.has_more is False
    assert (added.first_id, added.last_id) == (added.data[0].id, added.data[-1].id)
    assert all(isinstance(i, Message) and i.status == "completed" for i in added.data)
    assert [(i.role, i.content[0].type) for i in added.data[:2]] == [("assistant", "output_text"), ("user", "input_text")]

    assert texts(client.conversations.items.list(conv.id).data) == ["five", "four", "three", "two", "one"]  # desc by default
    page = client.conversations.items.list(conv.id, order="asc", limit=2)
    assert texts(page.data) == ["one", "two"] and page.has_more
    assert texts(list(page)) == ["one", "two", "three", "four", "five"]  # the client follows last_id
    assert texts(list(client.conversations.items.list(conv.id, order="desc", limit=3))) == ["five", "four", "three", "two", "one"]

    two = added.data[0]
    assert client.conversations.items.retrieve(two.id, conversation_id=conv.id) == two
    after = client.conversations.items.delete(two.id, conversation_id=conv.id)
    assert isinstance(after, Conversation) and after.id == conv.id
    assert texts(list(client.conversations.items.list(conv.id, order="asc"))) == ["one", "three", "four", "five"]
    with pytest.raises(openai.NotFoundError) as err:
        client.conversations.items.retrieve(two.id, conversation_id=conv.id)
    assert err.value.code == "item_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.conversations.items.list(conv.id, after=two.id)
    assert bad.value.param == "after"


def test_list_is_newest_activity_first_and_pages(secured: Stack) -> None:
    _, client = new_user(secured)
    a, b, c = (client.conversations.create(metadata={"title": t}) for t in "abc")
    assert [x.id for x in listed(client)] == [c.id, b.id, a.id]
    client.conversations.items.create(a.id, items=[say("user", "back to a")])  # activity moves a to the top
    client.conversations.update(b.id, metadata={"title": "renamed"})  # a rename is no activity
    first = listed(client, limit=2)
    assert [x.id for x in first.data] == [a.id, c.id] and first.has_more
    assert [x.id for x in first.get_next_page().data] == [b.id]
    assert [x.id for x in listed(client, limit=2)] == [a.id, c.id, b.id]  # auto-paging
    assert [x.metadata["title"] for x in listed(client)] == ["a", "c", "renamed"]


def test_search_by_title_and_text(secured: Stack) -> None:
    _, client = new_user(secured)
    bread = client.conversations.create(items=[say("user", "Sourdough starter tips"), say("assistant", "Feed it daily with Rye flour.")])
    other = client.conversations.create(items=[say("user", "Python dataclasses")])
    renamed = client.conversations.create(metadata={"title": "Rye whiskey notes"})
    assert [x.id for x in listed(client, q="rye")] == [renamed.id, bread.id]  # a title, then a message
    assert [x.id for x in listed(client, q="SOURDOUGH")] == [bread.id]
    assert [x.id for x in listed(client, q="python")] == [other.id]
    assert listed(client, q="nowhere").data == []
    page = listed(client, q="t", limit=1)  # "t" is in all three
    assert len(page.data) == 1 and page.has_more and [x.id for x in page] == [renamed.id, other.id, bread.id]


def test_users_cannot_see_each_others_conversations(secured: Stack) -> None:
    _, alice = new_user(secured)
    _, bob = new_user(secured)
    _, boss = new_user(secured, admin=True)
    conv = alice.conversations.create(items=[say("user", "my secret")], metadata={"title": "private"})
    item = alice.conversations.items.list(conv.id).data[0]
    for other in (bob, boss):  # admins too: a conversation is its owner's alone
        calls = [
            lambda: other.conversations.retrieve(conv.id),
            lambda: other.conversations.update(conv.id, metadata={"title": "mine now"}),
            lambda: other.conversations.items.list(conv.id),
            lambda: other.conversations.items.create(conv.id, items=[say("user", "hi")]),
            lambda: other.conversations.items.retrieve(item.id, conversation_id=conv.id),
            lambda: other.conversations.items.delete(item.id, conversation_id=conv.id),
            lambda: other.get(f"/conversations/{conv.id}/export", cast_to=str),
            lambda: other.conversations.delete(conv.id),
        ]
        for call in calls:
            with pytest.raises(openai.NotFoundError):
                call()
        assert listed(other).data == [] and listed(other, q="secret").data == []
        assert other.get("/conversations/export", cast_to=object)["conversations"] == []
    assert alice.conversations.retrieve(conv.id).metadata == {"title": "private"}
    assert texts(alice.conversations.items.list(conv.id).data) == ["my secret"]


def test_revoking_a_user_deletes_their_conversations(secured: Stack) -> None:
    name, carol = new_user(secured)
    for n in range(3):
        carol.conversations.create(items=[say("user", f"note {n}")])
    assert len(listed(carol).data) == 3
    carol.post("/conversations/defaults", body={"metadata": {"system": "Be brief."}}, cast_to=object)
    revoke = [sys.executable, "-m", "api.accounts.cli", "users", "revoke", name]
    subprocess.run(revoke, env=secured.env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert secured.redis.keys(f"*{name}*") == []  # nothing of theirs is left in Redis
    again = as_user(secured, add_user(secured, name))  # the same name later starts empty
    assert listed(again).data == []


def test_export_and_import_are_idempotent(secured: Stack) -> None:
    _, client = new_user(secured)
    first = client.conversations.create(items=[say("user", "What is *AOF*?"), say("assistant", "Redis's append-only file.")])
    second = client.conversations.create(items=[say("user", "hello")], metadata={"title": "Greeting", "kind": "test"})
    exported = client.get("/conversations/export", cast_to=object)
    assert isinstance(exported, dict) and exported["object"] == "hearth.conversation_export"
    assert [c["id"] for c in exported["conversations"]] == [second.id, first.id]
    assert [i["content"][0]["text"] for i in exported["conversations"][1]["items"]] == ["What is *AOF*?", "Redis's append-only file."]

    md = httpx.get(f"{secured.base_url}/conversations/{first.id}/export", params={"format": "markdown"},
                   headers={"Authorization": f"Bearer {client.api_key}"})
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert md.text.startswith("# What is *AOF*?\n") and "**User**\n\nWhat is *AOF*?\n\n**Assistant**\n\nRedis's append-only file.\n" in md.text

    before = [(c.id, c.metadata) for c in listed(client)]
    first_items = client.conversations.items.list(first.id, order="asc").data
    client.conversations.delete(first.id)
    client.conversations.items.delete(client.conversations.items.list(second.id).data[0].id, conversation_id=second.id)
    result = client.post("/conversations/import", body=exported, cast_to=object)
    assert result == {"object": "hearth.conversation_import", "conversations": 2, "created": 1, "items_added": 3}
    assert client.post("/conversations/import", body=exported, cast_to=object)["items_added"] == 0
    assert [(c.id, c.metadata) for c in listed(client)] == before
    assert client.conversations.items.list(first.id, order="asc").data == first_items

    _, other = new_user(secured)  # another user imports a copy: theirs alone, same ids
    assert other.post("/conversations/import", body=exported, cast_to=object)["created"] == 2
    client.conversations.delete(first.id)
    assert other.conversations.retrieve(first.id).id == first.id


def test_an_export_larger_than_a_request_body_imports(secured: Stack) -> None:
    _, client = new_user(secured)
    long = "x" * ApiSettings().conversation_text_chars
    for n in range(11):
        client.conversations.create(items=[say("user", f"{n} {long}"[: len(long)])])
    exported = client.get("/conversations/export", cast_to=object)
    body = json.dumps(exported).encode()
    assert len(body) > ApiSettings().max_body_bytes
    _, other = new_user(secured)
    r = httpx.post(f"{secured.base_url}/conversations/import", content=body,
                   headers={"Authorization": f"Bearer {other.api_key}", "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 200 and r.json()["created"] == 11, r.text
    too_big = httpx.post(f"{secured.base_url}/conversations", content=body,
                         headers={"Authorization": f"Bearer {other.api_key}", "Content-Type": "application/json"})
    assert too_big.status_code == 413  # the bound of every other body stands


def test_defaults_for_new_chats_are_the_owners_own(secured: Stack) -> None:
    _, ann = new_user(secured)
    _, ben = new_user(secured)
    assert ann.get("/conversations/defaults", cast_to=object) == {"object": "hearth.conversation_defaults", "metadata": {}}
    chosen = {"system": "Answer in French.", "temperature": "0.2"}
    saved = ann.post("/conversations/defaults", body={"metadata": chosen}, cast_to=object)
    assert saved == {"object": "hearth.conversation_defaults", "metadata": chosen}
    assert ann.get("/conversations/defaults", cast_to=object)["metadata"] == chosen
    assert ben.get("/conversations/defaults", cast_to=object)["metadata"] == {}
    assert ann.conversations.create().metadata == {}  # a client's new conversation is as it asks
    for bad in ({"metadata": {"k": "v" * 513}}, {"metadata": {f"k{n}": "v" for n in range(17)}}, {}):
        with pytest.raises(openai.BadRequestError) as err:
            ann.post("/conversations/defaults", body=bad, cast_to=object)
        assert err.value.param is not None and err.value.param.startswith("metadata"), err.value.body
    assert ann.get("/conversations/defaults", cast_to=object)["metadata"] == chosen
    ann.post("/conversations/defaults", body={"metadata": {}}, cast_to=object)
    assert ann.get("/conversations/defaults", cast_to=object)["metadata"] == {}


def test_bounds_get_openai_shaped_400s(secured: Stack) -> None:
    _, client = new_user(secured)
    conv = client.conversations.create()
    too_long = "x" * (ApiSettings().conversation_text_chars + 1)
    bad = [
        lambda: client.conversations.create(items=[say("user", "hi")] * 21),
        lambda: client.conversations.items.create(conv.id, items=[say("user", "hi")] * 21),
        lambda: client.conversations.items.create(conv.id, items=[]),
        lambda: client.conversations.items.create(conv.id, items=[say("user", too_long)]),
        lambda: client.conversations.items.create(conv.id, items=[{"type": "function_call_output", "call_id": "c", "output": too_long}]),
        lambda: client.conversations.items.create(conv.id, items=[{"type": "function_call_output", "output": "x"}]),  # no call_id
        lambda: client.conversations.items.create(conv.id, items=[{"type": "reasoning", "summary": []}]),
        lambda: client.conversations.items.create(conv.id, items=[
            {"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png", "detail": "auto"}]}]),
        lambda: client.conversations.items.create(conv.id, items=[say("robot", "hi")]),
        lambda: client.conversations.create(metadata={f"k{n}": "v" for n in range(17)}),
        lambda: client.conversations.update(conv.id, metadata={"k" * 65: "v"}),
        lambda: client.conversations.update(conv.id, metadata={"k": "v" * 513}),
        lambda: client.conversations.items.list(conv.id, limit=101),
        lambda: client.conversations.items.list(conv.id, order="sideways"),
        lambda: listed(client, limit=0),
        lambda: client.post("/conversations/import", body={"conversations": [{"id": "x:y", "created_at": 1, "metadata": {}}]}, cast_to=object),
        lambda: client.post("/conversations/import", body={"object": "something else", "conversations": []}, cast_to=object),
        lambda: client.post("/conversations/import", body={"conversations": [{"id": "defaults", "created_at": 1, "metadata": {}}]}, cast_to=object),
    ]
    for n, call in enumerate(bad):
        with pytest.raises(openai.BadRequestError) as err:
            call()
        assert err.value.type == "invalid_request_error", n
        assert err.value.body and err.value.message, n
    assert client.conversations.items.list(conv.id).data == []  # nothing was written
    assert client.conversations.retrieve(conv.id).metadata == {}
    assert client.conversations.create(metadata={f"k{n}": "v" * 512 for n in range(16)}).metadata["k0"] == "v" * 512


def test_per_user_caps_are_settings(redis_server, log_dir) -> None:
    s = api_only(redis_server, log_dir, CONVERSATIONS_PER_USER="2", CONVERSATION_ITEMS="3")
    try:
        client = as_user(s)
        conv = client.conversations.create(items=[say("user", "1"), say("assistant", "2")])
        client.conversations.items.create(conv.id, items=[say("user", "3")])
        with pytest.raises(openai.BadRequestError) as err:
            client.conversations.items.create(conv.id, items=[say("user", "4")])
        assert err.value.code == "conversation_limit_reached"
        with pytest.raises(openai.BadRequestError):
            client.conversations.create(items=[say("user", "1")] * 4)
        exported = client.get("/conversations/export", cast_to=object)
        client.conversations.create()
        with pytest.raises(openai.BadRequestError) as err:
            client.conversations.create()
        assert err.value.code == "conversation_limit_reached"
        for c in listed(client):
            client.conversations.delete(c.id)
        exported["conversations"] *= 3
        exported["conversations"][0] = {**exported["conversations"][0], "id": "conv_a"}
        exported["conversations"][1] = {**exported["conversations"][1], "id": "conv_b"}
        with pytest.raises(openai.BadRequestError):  # three new conversations: none is imported
            client.post("/conversations/import", body=exported, cast_to=object)
        assert listed(client).data == []
    finally:
        s.stop()


def test_conversations_survive_restarting_redis_and_the_api(log_dir) -> None:
    own = RedisServer(log_dir)
    s = api_only(own, log_dir, db=0)
    try:
        client = as_user(s)
        older = client.conversations.create(items=[say("user", "older")])
        conv = client.conversations.create(items=[say("user", "kept?"), say("assistant", "kept.")], metadata={"title": "T"})
        s.api.stop()
        own.stop()  # Redis writes its append-only file as it goes; a stop loses nothing
        own.start()
        s.start_api()
        assert client.conversations.retrieve(conv.id) == conv
        assert texts(client.conversations.items.list(conv.id, order="asc").data) == ["kept?", "kept."]
        assert [c.id for c in listed(client)] == [conv.id, older.id]
    finally:
        s.stop()
        own.stop()


def test_record_answer_is_once_per_job_and_history_lists_turns(secured: Stack) -> None:
    """The store's hooks for chats: an answer recorded twice (a retried job) is kept once."""
    name, client = new_user(secured)
    conv = client.conversations.create(items=[say("system", "Be brief.")])
    gone = client.conversations.create()
    client.conversations.delete(gone.id)

    async def run() -> tuple[list, list, object]:
        redis = AsyncRedis.from_url(secured.redis_url)
        store = ConversationStore(redis, ApiSettings(conversation_items=2))
        try:
            await store.add_items(name, conv.id, [message("user", "Hi?")])
            recorded = await asyncio.gather(*(store.record_answer(name, conv.id, "job-1", "Hello.") for _ in range(5)))
            late = await store.record_answer(name, gone.id, "job-2", "Too late.")
            return recorded, chat_history((await store.items(name, conv.id, None, -1, "asc"))[0]), late
        finally:
            await redis.aclose()

    recorded, history, late = asyncio.run(run())
    assert sum(r is not None for r in recorded) == 1  # one atomic write, the rest add nothing
    assert [(m.role, m.content) for m in history] == [("system", "Be brief."), ("user", "Hi?"), ("assistant", "Hello.")]  # past the cap of 2: an answer is kept
    assert late is None
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(gone.id)  # recording into a deleted conversation does not bring it back
    assert [c.id for c in listed(client)] == [conv.id]
