"""`hearth users …`: manage who may use Hearth (run where REDIS_URL reaches Hearth's Redis).
It calls the same service as the Admin tab's routes (api.accounts.service), so a rule has
one owner; the operator at the server's console acts as an admin."""

import argparse
import asyncio
import getpass
import sys
from datetime import datetime

from redis.exceptions import RedisError

from api.accounts.service import CLI_ACTOR, AccountService
from api.accounts.users import AuthError, NoSuchUser, UserStore
from api.conversations.store import ConversationStore
from api.documents.service import file_services
from api.responses.store import ResponseStore
from api.settings import ApiSettings
from api.sharing.store import ShareStore
from api.usage.store import DEFAULT, Quota, QuotaStore, UsageStore
from hearth.redis_client import connect_async, redacted
from hearth.usage import UsageClock

LIMITS = tuple(Quota.model_fields)


def add_arguments(users: argparse.ArgumentParser) -> None:
    cmd = users.add_subparsers(dest="command", required=True)
    add = cmd.add_parser("add", help="create a user and print its API key (shown once)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may manage people and see every job and the whole status page")
    cmd.add_parser("list", help="list users by name with their role, number of keys, last seen and tokens today")
    for name, text in (("key", "print one more API key for a user"),
                       ("revoke", "delete a user with all its keys, sessions, conversations, files, documents, stored responses and usage"),
                       ("passwd", "set the password a user signs in to the ui with (read from stdin if piped)"),
                       ("admin", "make a user an admin"), ("unadmin", "make an admin a plain user")):
        cmd.add_parser(name, help=text).add_argument("name")
    quota = cmd.add_parser("quota", help="show or set a user's limits (`--default`: everyone's); unset limits take the default's")
    who = quota.add_mutually_exclusive_group(required=True)
    who.add_argument("name", nargs="?")
    who.add_argument("--default", action="store_true", help="the limits of everyone who has none of their own")
    for limit in LIMITS:
        quota.add_argument(f"--{limit.replace('_', '-')}", type=int, metavar="N", help=Quota.model_fields[limit].description)
    quota.add_argument("--clear", action="store_true", help="remove all of its limits (a user then has the default's)")


def _password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first, second = getpass.getpass("Password: "), getpass.getpass("Again: ")
    if first != second:
        raise AuthError("the passwords differ")
    return first


def _when(seconds: int | None) -> str:
    return "never" if seconds is None else datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


async def _quota(args: argparse.Namespace, accounts: AccountService, quotas: QuotaStore) -> str:
    who = DEFAULT if args.default else args.name
    label = "everyone (default)" if args.default else repr(who)
    if who != DEFAULT and not await accounts.users.exists(who):
        raise NoSuchUser(who)
    if args.clear:
        await quotas.clear(CLI_ACTOR, who)
        return f"Cleared the limits of {label}."
    given = {limit: getattr(args, limit) for limit in LIMITS if getattr(args, limit) is not None}
    quota = await quotas.get(who)
    if given:
        quota = quota.model_copy(update=given)
        await quotas.set(CLI_ACTOR, Quota.model_validate(quota.model_dump()), who)
    shown = ", ".join(f"{limit}={getattr(quota, limit)}" for limit in LIMITS if getattr(quota, limit) is not None)
    return f"Limits of {label}: {shown or 'none'}."


async def _run(args: argparse.Namespace, accounts: AccountService, quotas: QuotaStore) -> str:
    if args.command == "add":
        key = await accounts.add(CLI_ACTOR, args.name, admin=args.admin)
        return f"Created {'admin' if args.admin else 'user'} {args.name!r}. API key (shown only now):\n{key}"
    if args.command == "key":
        return (await accounts.new_key(CLI_ACTOR, args.name))[0]
    if args.command == "list":
        return "\n".join(f"{u.name}\t{u.role.value}\t{u.keys} key(s)\tlast seen {_when(u.last_seen)}\t{today.get('tokens', 0)} tokens today"
                         for u, today in await accounts.people()) or "(no users)"
    if args.command == "revoke":
        r = await accounts.revoke(CLI_ACTOR, args.name)
        return (f"Deleted {args.name!r}, {r.keys} key(s), {r.sessions} session(s), {r.conversations} conversation(s), "
                f"{r.documents} document(s) and {r.responses} stored response(s).")
    if args.command in ("admin", "unadmin"):
        await accounts.set_admin(CLI_ACTOR, args.name, args.command == "admin")
        return f"{args.name!r} is now {'an admin' if args.command == 'admin' else 'a user'}."
    if args.command == "quota":
        return await _quota(args, accounts, quotas)
    await accounts.set_password(CLI_ACTOR, args.name, _password())
    return f"Password set for {args.name!r}."


def run(args: argparse.Namespace) -> int:
    settings = ApiSettings()

    async def run() -> str:
        redis = connect_async(settings.redis_url)
        try:
            usage = UsageStore(redis, UsageClock(settings.usage_timezone, settings.usage_clock_offset_s))
            accounts = AccountService(UserStore(redis), ConversationStore(redis, settings), usage, ShareStore(redis),
                                      file_services(redis, settings)[1], ResponseStore(redis, settings.response_retention_s))
            return await _run(args, accounts, QuotaStore(redis))
        finally:
            await redis.aclose()

    try:
        sys.stdout.write(asyncio.run(run()) + "\n")
    except AuthError as exc:
        sys.stderr.write(f"hearth: {exc}\n")
        return 1
    except RedisError as exc:
        sys.stderr.write(f"hearth: cannot reach Redis at {redacted(settings.redis_url)}: {exc}\n")
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hearth", description="Manage Hearth's users and API keys.")
    add_arguments(parser.add_subparsers(dest="group", required=True).add_parser("users", help="users and their API keys"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
