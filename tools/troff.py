"""Plain text into man(7) markup: escaping, inline `code`, and click's paragraphs."""

from __future__ import annotations

import inspect
import re

_CODE = re.compile(r"`([^`]+)`")


def escape(text: str) -> str:
    """Text as troff prints it: backslashes doubled, no line read as a request."""
    text = text.replace("\\", "\\e")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def option(text: str) -> str:
    """An option name in bold, with real minus signs (`--uri` is typed, not hyphenated)."""
    return "\\fB" + escape(text).replace("-", "\\-") + "\\fR"


def inline(text: str) -> str:
    """Prose with `code` spans in bold; hyphens in code are minus signs."""
    out: list[str] = []
    last = 0
    for match in _CODE.finditer(text):
        out.append(escape(text[last : match.start()]))
        out.append(option(match.group(1)))
        last = match.end()
    out.append(escape(text[last:]))
    return "".join(out)


def paragraphs(text: str) -> list[str]:
    """click's help text as man markup: blank lines part paragraphs; a paragraph led by
    `\\b` keeps its lines as written (click's no-rewrap marker)."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        lines = block.split("\n")
        if lines[0].strip() == "\b":
            out.append(".PP\n.nf\n" + escape("\n".join(lines[1:])) + "\n.fi")
        else:
            out.append(".PP\n" + inline(" ".join(line.strip() for line in lines)))
    return out
