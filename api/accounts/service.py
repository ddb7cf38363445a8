"""Everything an admin or a person may do to accounts, with its rules, for the api's routes
and the `hearth users` CLI alike (one owner of each rule). Every change is logged: who did
it, what, to whom — never a key or a password."""

import logging
import secrets
from dataclasses import dataclass

from api.accounts.users import AuthError, KeyInfo, NoSuchUser, Role, User, UserInfo, UserStore
from api.conversations.store import ConversationStore
from api.documents.service import DocumentService
from api.responses.store import ResponseStore
from api.sharing.store import ShareStore
from api.usage.store import UsageStore

log = logging.getLogger(__name__)

CLI_ACTOR = User("(server console)", Role.ADMIN)  # `hearth users` runs where Redis is: the operator


@dataclass(frozen=True)
class Revocation:
    """What revoking a person deletes (or deleted)."""

    user: str
    keys: int
    sessions: int
    conversations: int
    usage_records: int
    done: bool
    documents: int = 0
    responses: int = 0  # stored responses


class AccountService:
    def __init__(self, users: UserStore, conversations: ConversationStore, usage: UsageStore, shares: ShareStore,
                 documents: DocumentService, responses: ResponseStore):
        self.users, self._conversations, self._usage, self._shares = users, conversations, usage, shares
        self._documents, self._responses = documents, responses

    @staticmethod
    def _log(actor: User, action: str, target: str, **details: object) -> None:
        log.info("account %s", action, extra={"actor": actor.name, "action": action, "target": target, **details})

    async def add(self, actor: User, name: str, admin: bool = False) -> str:
        """Create a person; their first API key, shown this once."""
        key = await self.users.add(name, admin)
        self._log(actor, "add", name, role=(Role.ADMIN if admin else Role.USER).value)
        return key

    async def people(self) -> list[tuple[UserInfo, dict[str, int]]]:
        """Every person with their usage totals today."""
        everyone = await self.users.list()
        today = await self._usage.today([u.name for u in everyone])
        return [(u, today[u.name]) for u in everyone]

    async def set_password(self, actor: User, name: str, password: str) -> None:
        await self.users.set_password(name, password)
        self._log(actor, "set_password", name)

    async def reset_password(self, actor: User, name: str) -> str:
        """A new random password for `name`, shown this once."""
        password = secrets.token_urlsafe(12)
        await self.users.set_password(name, password)
        self._log(actor, "reset_password", name)
        return password

    async def set_admin(self, actor: User, name: str, admin: bool) -> None:
        await self.users.set_role(name, Role.ADMIN if admin else Role.USER)
        self._log(actor, "make_admin" if admin else "unmake_admin", name)

    async def revocation(self, name: str) -> Revocation:
        """What revoking `name` would delete, for the page to show before it does."""
        if not await self.users.exists(name):
            raise NoSuchUser(name)
        return Revocation(name, len(await self.users.keys(name)), await self.users.sessions(name),
                          await self._conversations.count_owner(name), len(await self._usage.periods_kept(name)), False,
                          await self._documents.count_owner(name), await self._responses.count_owner(name))

    async def revoke(self, actor: User, name: str) -> Revocation:
        """Delete a person with their keys, sessions (their open pages sign out), conversations,
        files (documents' bytes and text with them), inline documents, stored responses, shares,
        usage and quota."""
        if actor.name == name:
            raise AuthError("You cannot revoke yourself; ask another admin.", 409, "revoke_self")
        sessions = await self.users.sessions(name)
        keys = await self.users.delete(name)  # first, so that refusing the last admin's deletes nothing
        conversations = await self._conversations.delete_owner(name)
        documents = await self._documents.delete_owner(name)
        responses = await self._responses.delete_owner(name)
        await self._shares.forget_user(name)  # what they shared and what was shared with them
        usage = await self._usage.forget(name)
        self._log(actor, "revoke", name, keys=keys, conversations=conversations, documents=documents, responses=responses)
        return Revocation(name, keys, sessions, conversations, usage, True, documents, responses)

    async def new_key(self, actor: User, name: str, label: str = "") -> tuple[str, KeyInfo]:
        key, info = await self.users.new_key(name, label)
        self._log(actor, "new_key", name, key_id=info.id)
        return key, info

    async def revoke_key(self, actor: User, name: str, key_id: str) -> None:
        if not await self.users.revoke_key(name, key_id):
            raise AuthError(f"no key {key_id!r}", 404, "key_not_found")
        self._log(actor, "revoke_key", name, key_id=key_id)

    async def change_own_password(self, user: User, current: str, new: str) -> None:
        """A person's own change: it needs the current password (when one is set), so a page
        left signed in is not enough to lock its owner out."""
        if not await self.users.password_matches(user.name, current):
            raise AuthError("The current password is wrong.", 403, "wrong_password")
        await self.set_password(user, user.name, new)

    async def sign_out_everywhere(self, user: User) -> int:
        ended = await self.users.end_sessions(user.name)
        self._log(user, "sign_out_everywhere", user.name, sessions=ended)
        return ended
