"""Sharing a conversation read-only with one person or everyone: they find it under
`/v1/shared`, read it, continue it as their own copy; the owner sees and stops the sharing; a
revoked person loses it; nothing is reachable without signing in."""

import httpx

from devstack import Stack, add_user
from tests.test_accounts import api


def conversation(stack: Stack, key: str, title: str) -> str:
    r = api(stack, key).post("/conversations", json={"metadata": {"title": title},
                                                     "items": [{"type": "message", "role": "user", "content": "Our soup recipe?"}]})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_share_with_one_person_read_and_fork_then_stop(secured: Stack) -> None:
    ann, ben, cat = add_user(secured, "ann"), add_user(secured, "ben"), add_user(secured, "cat")
    conv = conversation(secured, ann, "Soup")
    with api(secured, ann) as owner, api(secured, ben) as reader, api(secured, cat) as outsider:
        assert reader.get(f"/shared/ann/{conv}").status_code == 404  # not shared yet
        assert owner.post(f"/conversations/{conv}/shares", json={"with": "ben"}).json()["data"] == ["ben"]
        assert owner.post(f"/conversations/{conv}/shares", json={"with": "nobody"}).status_code == 404
        assert reader.post(f"/conversations/{conv}/shares", json={"with": "cat"}).status_code == 404  # not ben's to share
        listed = reader.get("/shared").json()["data"]
        assert [(c["owner"], c["id"], c["metadata"]["title"]) for c in listed] == [("ann", conv, "Soup")]
        shared = reader.get(f"/shared/ann/{conv}").json()
        assert [i["content"][0]["text"] for i in shared["items"]] == ["Our soup recipe?"]
        assert outsider.get("/shared").json()["data"] == [] and outsider.get(f"/shared/ann/{conv}").status_code == 404
        # Read-only: the conversation itself stays the owner's.
        assert reader.post(f"/conversations/{conv}/items", json={"items": [{"type": "message", "role": "user", "content": "x"}]}).status_code == 404
        copy = reader.post(f"/shared/ann/{conv}/fork").json()
        assert copy["id"] != conv and copy["metadata"] == {"title": "Soup", "forked_from": f"ann/{conv}"}
        assert reader.post(f"/conversations/{copy['id']}/items",
                           json={"items": [{"type": "message", "role": "user", "content": "With leeks?"}]}).status_code == 200
        assert len(owner.get(f"/conversations/{conv}/items").json()["data"]) == 1  # the original is unchanged
        assert owner.get(f"/conversations/{conv}/shares").json()["data"] == ["ben"]
        assert owner.delete(f"/conversations/{conv}/shares/ben").json()["removed"] is True
        assert reader.get("/shared").json()["data"] == [] and reader.get(f"/shared/ann/{conv}").status_code == 404
        assert reader.get(f"/conversations/{copy['id']}").status_code == 200  # the copy is ben's own


def test_share_with_everyone_and_a_revoked_person_loses_it(secured: Stack, boss: str) -> None:
    dan, eve = add_user(secured, "dan"), add_user(secured, "eve")
    conv = conversation(secured, dan, "Holidays")
    with api(secured, dan) as owner, api(secured, eve) as reader:
        assert owner.post(f"/conversations/{conv}/shares", json={"with": "*"}).json()["data"] == ["*"]
        assert [c["id"] for c in reader.get("/shared").json()["data"]] == [conv]
        assert owner.get("/shared").json()["data"] == []  # one's own is not "shared with me"
        assert api(secured, boss).delete("/admin/users/dan").status_code == 200
        assert reader.get("/shared").json()["data"] == [] and reader.get(f"/shared/dan/{conv}").status_code == 404
    assert not secured.redis.keys("hearth:shares:dan:*")
    # Nothing is reachable without signing in.
    for method, path in (("GET", "/shared"), ("GET", f"/shared/dan/{conv}"), ("POST", f"/shared/dan/{conv}/fork"),
                         ("GET", f"/conversations/{conv}/shares")):
        assert httpx.request(method, f"{secured.base_url}{path}").status_code == 401


def test_revoking_a_reader_removes_them_from_the_owners_list(secured: Stack, boss: str) -> None:
    fay = add_user(secured, "fay")
    add_user(secured, "gus")
    conv = conversation(secured, fay, "Garden")
    with api(secured, fay) as owner:
        owner.post(f"/conversations/{conv}/shares", json={"with": "gus"})
        assert api(secured, boss).delete("/admin/users/gus").status_code == 200
        assert owner.get(f"/conversations/{conv}/shares").json()["data"] == []
    assert not secured.redis.exists("hearth:shared_with:gus")
