"""A parser for strongSwan's settings syntax (swanctl.conf, strongswan.conf).

It follows src/libstrongswan/settings/settings_lexer.l and settings_parser.y of strongSwan
5.9.8: `name { ... }` sections, `key = value` to the end of the line (the parts of a value are
joined with one space), quoted strings with escapes that may span lines, `#` comments,
`include PATTERN` (relative to the including file, globbed, sorted) anywhere a statement may
stand, section references `name : other.section {`, duplicate sections merged and duplicate keys
last-wins (kept at the place of their first appearance), and `key =` unsetting a key.

Deliberately stricter than strongSwan: a missing non-glob include, an empty include pattern, an
include cycle, an unknown section reference and non-UTF-8 text are errors.
"""

from __future__ import annotations

import glob as _glob
import os.path
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from extsock_py.domain.errors import ConfigError

MAX_INCLUDE_DEPTH = 16
MAX_NESTING = 64
_NAME_STOP = frozenset('#{}:.,="\r\n\t ')
_VALUE_STOP = frozenset('#}"\r\n\t ')
_INCLUDE_STOP = frozenset('"\\#}\r\n\t ')
_GLOB_MAGIC = frozenset("*?[")


@dataclass(frozen=True)
class Value:
    """One setting's value; its text is left out of repr (it may be a secret)."""

    text: str = field(repr=False)
    file: str
    line: int


@dataclass(frozen=True, repr=False)
class Section:
    """A section: its settings and subsections in the order they first appear."""

    name: str
    entries: dict[str, Value]
    sections: dict[str, Section]
    file: str
    line: int
    path: str = ""

    def key_path(self, key: str) -> str:
        """The dotted name of a key of this section, as used in messages."""
        return f"{self.path}.{key}" if self.path else key

    def __repr__(self) -> str:
        return (
            f"Section({self.path or '<root>'!r}, keys={list(self.entries)}, "
            f"sections={list(self.sections)}, at={self.file}:{self.line})"
        )


class FileReader(Protocol):
    """What the parser needs from a file system, so tests can give it a dict."""

    def read_text(self, path: str) -> str:
        """The text of a file; FileNotFoundError/OSError when it cannot be read."""
        ...

    def glob(self, pattern: str) -> list[str]:
        """The regular files matching a glob pattern (any order)."""
        ...


class LocalFiles:
    """The real file system."""

    def read_text(self, path: str) -> str:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8")

    def glob(self, pattern: str) -> list[str]:
        return [p for p in _glob.glob(pattern) if os.path.isfile(p)]


class _Tok(NamedTuple):
    kind: str  # name { } = : , . value ref
    text: str | None
    file: str
    line: int
    # A value ended by an unquoted '}' with more text after it on its line: that text
    # may be the rest of the value (a secret with a '}' in it). `glued`: the text follows
    # the brace with no space (`ab}cd`), which no statement written after a '}' looks like.
    cut: bool = False
    glued: bool = False


class _Include(NamedTuple):
    pattern: str
    line: int


def _error(file: str, line: int | None, message: str, accepted: str | None = None) -> ConfigError:
    return ConfigError(file=file, line=line, key=None, message=message, accepted=accepted)


class _Lexer:
    """The tokens of one file; includes are handed out for the caller to expand."""

    def __init__(self, text: str, file: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.file = file

    def _peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.s[j] if j < len(self.s) else ""

    def _tok(self, kind: str, text: str | None, line: int | None = None) -> _Tok:
        return _Tok(kind, text, self.file, self.line if line is None else line)

    def _skip_comment(self) -> None:
        end = self.s.find("\n", self.i)
        self.i = len(self.s) if end < 0 else end

    def _run(self, stop: frozenset[str]) -> str:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in stop:
            self.i += 1
        return self.s[start : self.i]

    def _skip_blank(self, c: str) -> bool:
        """Step over whitespace, a newline or a comment at `c`; False for anything else."""
        if c in " \t\r":
            self.i += 1
        elif c == "\n":
            self.line += 1
            self.i += 1
        elif c == "#":
            self._skip_comment()
        else:
            return False
        return True

    def tokens(self) -> Iterator[_Tok | _Include]:
        while self.i < len(self.s):
            c = self.s[self.i]
            if self._skip_blank(c):
                continue
            if c in "{}.,":
                self.i += 1
                yield self._tok(c, c)
            elif c == ":":
                self.i += 1
                yield self._tok(":", c)
                yield from self._refs()
            elif c == "=":
                self.i += 1
                yield self._tok("=", c)
                yield self._value()
            elif c == '"':
                raise _error(
                    self.file, self.line, "unexpected quoted string", "quotes only in values"
                )
            else:
                line = self.line
                name = self._run(_NAME_STOP)
                if name == "include" and self._peek() in (" ", "\t") and self._is_include():
                    yield _Include(self._include_pattern(), line)
                else:
                    yield self._tok("name", name, line)

    def _is_include(self) -> bool:
        j = self.i
        while j < len(self.s) and self.s[j] in " \t":
            j += 1
        return j < len(self.s) and self.s[j] != "="

    def _value(self) -> _Tok:
        line = self.line
        parts: list[str] = []
        while self.i < len(self.s) and self.s[self.i] not in "#}\n":
            c = self.s[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == '"':
                parts.append(self._string())
            else:
                parts.append(self._run(_VALUE_STOP))
        text = " ".join(parts) if parts else None
        return _Tok("value", text, self.file, line, *self._cut())

    def _cut(self) -> tuple[bool, bool]:
        """At a '}' that ends a value: whether more than braces and a comment follow on
        the line, and whether that text is glued to the braces."""
        j = self.i
        if j >= len(self.s) or self.s[j] != "}":
            return False, False
        while j < len(self.s) and self.s[j] == "}":
            j += 1
        glued = j < len(self.s) and self.s[j] not in " \t\r\n#"
        while j < len(self.s) and self.s[j] in "} \t\r":
            j += 1
        return j < len(self.s) and self.s[j] not in "\n#", glued

    def _string(self) -> str:
        start_line = self.line
        self.i += 1  # opening quote
        out: list[str] = []
        while True:
            if self.i >= len(self.s):
                raise _error(self.file, start_line, "unterminated quoted string")
            c = self.s[self.i]
            if c == '"':
                self.i += 1
                return "".join(out)
            if c == "\\":
                nxt = self._peek(1)
                if not nxt:
                    raise _error(self.file, start_line, "unterminated quoted string")
                if nxt == "\n" or (nxt == "\r" and self._peek(2) == "\n"):
                    self.i += 2 if nxt == "\n" else 3
                    self.line += 1
                    continue
                out.append({"n": "\n", "r": "\r", "t": "\t"}.get(nxt, nxt))
                self.i += 2
            elif c == "\r":
                self.i += 1
            else:
                if c == "\n":
                    self.line += 1
                out.append(c)
                self.i += 1

    def _refs(self) -> Iterator[_Tok]:
        while self.i < len(self.s):
            c = self.s[self.i]
            if self._skip_blank(c):
                continue
            if c == ",":
                self.i += 1
                yield self._tok(",", c)
            elif c in _NAME_STOP:
                return
            else:
                name = self._run(_NAME_STOP)
                while self._peek() == "." and self._peek(1) and self._peek(1) not in _NAME_STOP:
                    self.i += 1
                    name += "." + self._run(_NAME_STOP)
                yield self._tok("ref", name)

    def _include_pattern(self) -> str:
        while self._peek() in (" ", "\t"):
            self.i += 1
        out: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in "#}\n\t ":
                break
            if c == "\r":
                self.i += 1
            elif c == '"':
                out.append(self._string())
                break
            elif c == "\\":
                nxt = self._peek(1)
                if nxt and nxt in '"#} ':
                    out.append(nxt)
                    self.i += 2
                else:
                    out.append("\\")
                    self.i += 1
            else:
                out.append(self._run(_INCLUDE_STOP))
        return "".join(out)


class _Builder:
    def __init__(self, name: str, path: str, file: str, line: int) -> None:
        self.name, self.path, self.file, self.line = name, path, file, line
        self.entries: dict[str, Value | None] = {}
        self.sections: dict[str, _Builder] = {}
        self.refs: list[_Tok] = []

    def copy(self) -> _Builder:
        out = _Builder(self.name, self.path, self.file, self.line)
        out.entries = dict(self.entries)
        out.sections = dict(self.sections)
        out.refs = list(self.refs)
        return out


class _Parser:
    def __init__(self, reader: FileReader) -> None:
        self.reader = reader

    def stream(self, text: str, file: str, chain: tuple[str, ...]) -> Iterator[_Tok]:
        for item in _Lexer(text, file).tokens():
            if isinstance(item, _Include):
                yield from self.include(item, file, chain)
            else:
                yield item

    def include(self, inc: _Include, file: str, chain: tuple[str, ...]) -> Iterator[_Tok]:
        if not inc.pattern:
            raise _error(file, inc.line, "include without a file pattern", "include PATTERN")
        pattern = inc.pattern
        if not os.path.isabs(pattern):
            pattern = os.path.normpath(os.path.join(os.path.dirname(file), pattern))
        if any(c in _GLOB_MAGIC for c in inc.pattern):
            matches = sorted(self.reader.glob(pattern))
        else:
            matches = [pattern]
        for match in matches:
            name = os.path.normpath(match)
            if name in chain:
                cycle = " -> ".join([*chain, name])
                raise _error(file, inc.line, f"include cycle: {cycle}")
            if len(chain) > MAX_INCLUDE_DEPTH:
                raise _error(file, inc.line, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
            yield from self.stream(self.read(match, file, inc.line), match, (*chain, name))

    def read(self, path: str, by: str, line: int) -> str:
        try:
            return self.reader.read_text(path)
        except FileNotFoundError:
            raise _error(by, line, f"included file '{path}' not found") from None
        except UnicodeDecodeError as exc:
            raise _error(path, None, f"not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise _error(by, line, f"cannot read included file '{path}': {exc.strerror}") from None

    def parse(self, text: str, file: str) -> _Builder:
        root = _Builder("", "", file, 1)
        stack = [root]
        tokens = self.stream(text, file, (os.path.normpath(file),))
        # Lines where a value in `secrets` was cut by a '}' with text after it.
        tainted: set[tuple[str, int]] = set()
        for tok in tokens:
            cur = stack[-1]
            # Inside `secrets`, and on a line whose secret a '}' cut, an error shows no
            # text of the file: where, never what.
            secret = _is_secret(cur.path) or (tok.file, tok.line) in tainted
            if tok.kind == "}":
                if len(stack) == 1:
                    raise _error(tok.file, tok.line, "unexpected '}' without an open section")
                stack.pop()
                continue
            if tok.kind != "name" or tok.text is None:
                raise _error(tok.file, tok.line, f"unexpected '{tok.text}'", "a name")
            name = tok.text
            nxt = next(tokens, None)
            kind = nxt.kind if nxt else "end of file"
            if nxt is not None and nxt.kind == "=":
                value = next(tokens)
                if value.cut and secret:
                    tainted.add((value.file, value.line))
                if value.glued and secret:
                    raise ConfigError(
                        file=tok.file,
                        line=tok.line,
                        key=f"{cur.path}.{name}",
                        message="the value is cut short by an unquoted '}' with more text "
                        "after it (none of it is shown: it may be part of a secret)",
                        accepted="a value with a '}', '#' or spaces in double quotes: "
                        'secret = "..."',
                    )
                cur.entries[name] = (
                    None if value.text is None else Value(value.text, tok.file, tok.line)
                )
                continue
            refs: list[_Tok] = []
            if nxt is not None and nxt.kind == ":":
                refs, nxt = self.references(tokens, tok)
                kind = nxt.kind if nxt else "end of file"
            if nxt is None or nxt.kind != "{":
                raise self.unexpected(tok, kind, bool(refs), secret)
            if len(stack) > MAX_NESTING:
                raise _error(tok.file, tok.line, f"sections nested deeper than {MAX_NESTING}")
            section = cur.sections.get(name)
            if section is None:
                path = f"{cur.path}.{name}" if cur.path else name
                section = cur.sections[name] = _Builder(name, path, tok.file, tok.line)
            section.refs.extend(refs)
            stack.append(section)
        if len(stack) > 1:
            open_ = stack[-1]
            raise ConfigError(
                file=open_.file,
                line=open_.line,
                key=open_.path,
                message=f"section '{open_.name}' is not closed",
                accepted="a '}' for every '{'",
            )
        return root

    @staticmethod
    def references(tokens: Iterator[_Tok], at: _Tok) -> tuple[list[_Tok], _Tok | None]:
        refs: list[_Tok] = []
        while True:
            tok = next(tokens, None)
            if tok is None or tok.kind != "ref":
                raise _error(at.file, at.line, "expected a section name after ':'")
            refs.append(tok)
            tok = next(tokens, None)
            if tok is None or tok.kind != ",":
                return refs, tok

    @staticmethod
    def unexpected(tok: _Tok, kind: str, after_refs: bool, secret: bool) -> ConfigError:
        shown = "a name (not shown in the secrets section)" if secret else f"'{tok.text}'"
        if kind == ".":
            return _error(
                tok.file,
                tok.line,
                f"dotted name after {shown} is not supported in a file",
                "nested sections: a { b { key = value } }",
            )
        if after_refs:
            return _error(tok.file, tok.line, f"expected '{{' after the references of {shown}")
        got = kind if kind in ("end of file", "name") else f"'{kind}'"
        return _error(
            tok.file,
            tok.line,
            f"expected '=', '{{' or ':' after {shown}, got {got}",
            "'key = value' or 'name {'",
        )


def _is_secret(path: str) -> bool:
    """Whether a section path lies in swanctl.conf's `secrets`."""
    return path == "secrets" or path.startswith("secrets.")


def _lookup(root: _Builder, path: str) -> _Builder | None:
    node: _Builder | None = root
    for part in path.split("."):
        node = node.sections.get(part) if node is not None else None
    return node


def _overlay(own: _Builder, base: _Builder) -> _Builder:
    out = own.copy()
    for key, value in base.entries.items():
        out.entries.setdefault(key, value)
    for name, section in base.sections.items():
        mine = out.sections.get(name)
        out.sections[name] = section if mine is None else _overlay(mine, section)
    return out


def _resolve(root: _Builder, node: _Builder, visiting: frozenset[str]) -> _Builder:
    """`node` with its references applied; `visiting` holds the sections being resolved
    above it (its ancestors and the sections that reference it), so that a reference to
    any of them (`a { b : a { } }` too) is a cycle rather than an endless recursion."""
    inner = visiting | {node.path}
    out = node.copy()
    out.sections = {n: _resolve(root, s, inner) for n, s in node.sections.items()}
    for ref in node.refs:
        assert ref.text is not None
        shown = "a section (not shown in the secrets section)"
        if not _is_secret(node.path):
            shown = f"'{ref.text}'"
        target = _lookup(root, ref.text)
        if target is None:
            raise _error(ref.file, ref.line, f"referenced section {shown} does not exist")
        if target.path in inner:
            raise _error(ref.file, ref.line, f"section reference cycle through {shown}")
        out = _overlay(out, _resolve(root, target, inner))
    return out


def _freeze(node: _Builder, path: str) -> Section:
    return Section(
        name=node.name,
        entries={k: v for k, v in node.entries.items() if v is not None},
        sections={n: _freeze(s, f"{path}.{n}" if path else n) for n, s in node.sections.items()},
        file=node.file,
        line=node.line,
        path=path,
    )


def parse_settings(text: str, filename: str, reader: FileReader | None = None) -> Section:
    """Parse settings text read from `filename`; includes are read through `reader`."""
    root = _Parser(reader or LocalFiles()).parse(text, filename)
    return _freeze(_resolve(root, root, frozenset()), "")


def split_list(value: str) -> list[str]:
    """Split a value like strongSwan's enumerator_create_token(value, ",", " ").

    Empty items are dropped, items are trimmed of spaces, and an item in '...' or "..." quotes
    is taken verbatim (commas included).
    """
    out: list[str] = []
    pos, end = 0, len(value)
    while True:
        while pos < end and value[pos] in ", ":
            pos += 1
        if pos < end and value[pos] in "\"'":
            close = value.find(value[pos], pos + 1)
            if close >= 0:
                out.append(value[pos + 1 : close])
                pos = close + 1
                continue
        comma = value.find(",", pos)
        last = comma < 0
        token = value[pos:] if last else value[pos:comma]
        pos = end if last else comma + 1
        token = token.rstrip(" ")
        if token:
            out.append(token)
        if last:
            return out
