"""`hearth users …`: manage who may use Hearth (run where REDIS_URL reaches Hearth's Redis)."""

import argparse
import asyncio
import getpass
import sys

from redis.exceptions import RedisError

from api.accounts.users import AuthError, UserStore
from api.conversations.store import ConversationStore
from api.settings import ApiSettings
from hearth.redis_client import connect_async, redacted


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description="Manage Hearth's users and API keys.")
    users = parser.add_subparsers(dest="group", required=True).add_parser("users", help="users and their API keys")
    cmd = users.add_subparsers(dest="command", required=True)
    add = cmd.add_parser("add", help="create a user and print its API key (shown once)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may see every job and the whole status page")
    cmd.add_parser("list", help="list users by name with their role and number of keys")
    for name, text in (("key", "print one more API key for a user"), ("revoke", "delete a user with all its keys and conversations"),
                       ("passwd", "set the password a user signs in to the ui with (read from stdin if piped)")):
        cmd.add_parser(name, help=text).add_argument("name")
    return parser


def _password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first, second = getpass.getpass("Password: "), getpass.getpass("Again: ")
    if first != second:
        raise AuthError("the passwords differ")
    return first


async def _run(args: argparse.Namespace, users: UserStore) -> str:
    if args.command == "add":
        key = await users.add(args.name, admin=args.admin)
        return f"Created {'admin' if args.admin else 'user'} {args.name!r}. API key (shown only now):\n{key}"
    if args.command == "key":
        return await users.new_key(args.name)
    if args.command == "list":
        return "\n".join(f"{name}\t{role}\t{keys} key(s)" for name, role, keys in await users.list()) or "(no users)"
    if args.command == "revoke":
        return f"Deleted {args.name!r} and {await users.revoke(args.name)} key(s)."
    await users.set_password(args.name, _password())
    return f"Password set for {args.name!r}."


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = ApiSettings()

    async def run() -> str:
        redis = connect_async(settings.redis_url)
        try:
            return await _run(args, UserStore(redis, on_revoke=[ConversationStore(redis, settings).delete_owner]))
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


if __name__ == "__main__":
    sys.exit(main())
