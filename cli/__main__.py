"""`hearth …` (and `python -m cli …`): `users` administers accounts, `batch` runs a file of prompts."""

import argparse
import sys

from api.accounts import cli as users
from cli import batch


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["batch"]:
        parser = argparse.ArgumentParser(prog="hearth batch", description="Run a file of prompts as a batch.")
        batch.add_arguments(parser)
        return batch.run(parser.parse_args(argv[1:]))
    return users.main(argv)


if __name__ == "__main__":
    sys.exit(main())
