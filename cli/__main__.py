"""`hearth …` (and `python -m cli …`): `users` administers accounts, `batch` runs a file of prompts."""

import argparse
import sys

from api.accounts import cli as users
from cli import batch


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hearth", description="Hearth from a terminal.")
    groups = top.add_subparsers(dest="group", required=True, metavar="COMMAND")
    users.add_arguments(groups.add_parser("users", help="people, their API keys, roles and quotas (where REDIS_URL reaches Hearth's Redis)",
                                          description="Manage Hearth's users, API keys and quotas."))
    batch.add_arguments(groups.add_parser("batch", help="run a file of prompts as a batch (through the api, with your key)",
                                          description="Run a file of prompts as a batch."))
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return batch.run(args) if args.group == "batch" else users.run(args)


if __name__ == "__main__":
    sys.exit(main())
