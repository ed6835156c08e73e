"""`python -m tools man|completion [--check]`: write the generated files, or check them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from tools import completion, man_conf, man_extsock

ROOT = Path(__file__).resolve().parents[1]

# What each make target writes, by path in the repository.
TARGETS: dict[str, dict[str, Callable[[], str]]] = {
    "man": {
        "docs/man/extsock.8": man_extsock.render,
        "docs/man/extsock.conf.5": man_conf.render,
    },
    "completion": {"contrib/bash-completion/extsock": completion.render},
}


def main(argv: list[str], root: Path = ROOT) -> int:
    if not argv or argv[0] not in TARGETS or argv[1:] not in ([], ["--check"]):
        print(f"usage: python -m tools {{{'|'.join(TARGETS)}}} [--check]", file=sys.stderr)
        return 2
    stale = 0
    for shown, render in TARGETS[argv[0]].items():
        text = render()
        path = root / shown
        if argv[1:] == ["--check"]:
            if not path.exists() or path.read_text() != text:
                print(f"{shown}: out of date; run make {argv[0]}", file=sys.stderr)
                stale += 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {shown}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
