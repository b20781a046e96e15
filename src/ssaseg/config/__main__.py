"""``python -m ssaseg.config [--check]``: regenerate (or check) ``configs/SCHEMA.md``."""
from __future__ import annotations

import argparse
import sys

from .docs import SCHEMA_PATH, render_schema_doc, write_schema_doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssaseg.config", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if SCHEMA.md is not up to date")
    args = parser.parse_args(argv)
    if args.check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.is_file() else ""
        if current != render_schema_doc():
            print(f"{SCHEMA_PATH} is out of date: run python -m ssaseg.config", file=sys.stderr)
            return 1
        return 0
    changed = write_schema_doc()
    print(f"{'wrote' if changed else 'unchanged:'} {SCHEMA_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
