"""The `sebench` command (placeholder; subcommands arrive with their modules)."""
import sys


def main(argv=None) -> int:
    print("sebench", file=sys.stderr)
    return 0
