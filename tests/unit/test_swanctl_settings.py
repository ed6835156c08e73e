"""The strongSwan settings parser: syntax, includes, references and its errors."""

from __future__ import annotations

import contextlib
import fnmatch
import os.path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extsock_py.adapters.swanctl.model import validate
from extsock_py.adapters.swanctl.settings import Section, parse_settings, split_list
from extsock_py.domain.errors import ConfigError


class DictFiles:
    """A file system in a dict, for includes."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def read_text(self, path: str) -> str:
        try:
            return self.files[os.path.normpath(path)]
        except KeyError:
            raise FileNotFoundError(path) from None

    def glob(self, pattern: str) -> list[str]:
        pattern = os.path.normpath(pattern)
        return [p for p in reversed(list(self.files)) if fnmatch.fnmatch(p, pattern)]


def parse(text: str, files: dict[str, str] | None = None) -> Section:
    return parse_settings(text, "/etc/swanctl/swanctl.conf", DictFiles(files or {}))


def texts(section: Section) -> dict[str, str]:
    return {key: value.text for key, value in section.entries.items()}


def error(text: str, files: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, files)
    return info.value


def test_sections_keys_and_lines() -> None:
    root = parse("# head\na {\n  x = 1\n  b {\n    y = two words  \n  }\n}\n")
    a = root.sections["a"]
    assert (a.line, a.path) == (2, "a")
    assert texts(a) == {"x": "1"}
    assert a.entries["x"].line == 3
    b = a.sections["b"]
    assert (b.line, b.path, texts(b)) == (4, "a.b", {"y": "two words"})
    assert a.entries["x"].file == "/etc/swanctl/swanctl.conf"


def test_value_parts_are_joined_with_one_space_and_end_at_comment_or_brace() -> None:
    root = parse('a { x = one   two\t"three  four" # comment\n y = last }')
    assert texts(root.sections["a"]) == {"x": "one two three  four", "y": "last"}


def test_quoted_strings_with_escapes_span_lines() -> None:
    root = parse('a {\n x = "tab\\there \\"q\\" \\\\ #no comment\n second line"\n y = z\n}')
    a = root.sections["a"]
    assert a.entries["x"].text == 'tab\there "q" \\ #no comment\n second line'
    assert a.entries["y"].line == 4


def test_escaped_newline_joins_lines() -> None:
    assert texts(parse('x = "a\\\nb"')) == {"x": "ab"}


def test_duplicate_keys_last_wins_at_first_position_and_sections_merge() -> None:
    root = parse("a {\n x = 1\n y = 2\n x = 3\n}\na {\n z = 4\n}")
    a = root.sections["a"]
    assert list(texts(a).items()) == [("x", "3"), ("y", "2"), ("z", "4")]
    assert a.entries["x"].line == 4


def test_empty_value_unsets_a_key() -> None:
    assert texts(parse("x = 1\ny = 2\nx =\n")) == {"y": "2"}


def test_section_references_inherit_what_is_not_set() -> None:
    root = parse("base {\n x = 1\n y = 2\n sub { k = v }\n}\nderived : base {\n y = 3\n}\n")
    derived = root.sections["derived"]
    assert texts(derived) == {"y": "3", "x": "1"}
    assert texts(derived.sections["sub"]) == {"k": "v"}
    assert derived.sections["sub"].path == "derived.sub"


def test_unknown_reference_is_an_error() -> None:
    err = error("a : nowhere.else {\n}")
    assert (err.line, "nowhere.else" in err.message) == (1, True)


def test_include_inside_a_section_relative_to_including_file_sorted_glob() -> None:
    files = {
        "/etc/swanctl/conf.d/b.conf": "gw-b { include ../base.inc }",
        "/etc/swanctl/conf.d/a.conf": "gw-a { include ../base.inc }",
        "/etc/swanctl/base.inc": "\n\nversion = 2",
    }
    root = parse("connections {\n include conf.d/*.conf\n}", files)
    conns = root.sections["connections"]
    assert list(conns.sections) == ["gw-a", "gw-b"]
    version = conns.sections["gw-b"].entries["version"]
    assert (version.text, version.file, version.line) == ("2", "/etc/swanctl/base.inc", 3)


def test_glob_without_matches_is_fine_and_quoted_include_works() -> None:
    root = parse(
        'include none/*.conf\ninclude "my file.conf"', {"/etc/swanctl/my file.conf": "x=1"}
    )
    assert texts(root) == {"x": "1"}


def test_missing_include_is_an_error_naming_the_line() -> None:
    err = error("a {\n}\ninclude missing.conf\n")
    assert (err.file, err.line) == ("/etc/swanctl/swanctl.conf", 3)
    assert "/etc/swanctl/missing.conf" in err.message


def test_include_cycle_is_an_error() -> None:
    err = error("include a.conf", {"/etc/swanctl/a.conf": "include swanctl.conf"})
    assert "include cycle" in err.message
    assert err.file == "/etc/swanctl/a.conf"


def test_key_named_include_is_a_key() -> None:
    assert texts(parse("include = yes")) == {"include": "yes"}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a {\n  x 1\n}", 2, "expected '=', '{' or ':' after 'x'"),
        ("a {\n  b {\n  x = 1\n}\n", 1, "section 'a' is not closed"),
        ("a {\n}\n}\n", 3, "unexpected '}'"),
        ('a {\n  x = "open\n}\n', 2, "unterminated quoted string"),
        ("a.b = 1", 1, "dotted name"),
        ("= 1", 1, "unexpected '='"),
        ('"x" = 1', 1, "unexpected quoted string"),
        ("include \n", 1, "include without a file pattern"),
    ],
)
def test_syntax_errors_name_the_line(text: str, line: int, words: str) -> None:
    err = error(text)
    assert err.line == line
    assert words in str(err)
    assert str(err).startswith(f"/etc/swanctl/swanctl.conf:{line}: ")


def test_unclosed_section_error_names_its_key() -> None:
    err = error("connections {\n home {\n")
    assert (err.key, err.line) == ("connections.home", 2)


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        (" a,, b, ", ["a", "b"]),
        ("", []),
        ("'x, y', z", ["x, y", "z"]),
        ("10.0.0.0/8[tcp/80]", ["10.0.0.0/8[tcp/80]"]),
    ],
)
def test_split_list_like_enumerator_create_token(value: str, items: list[str]) -> None:
    assert split_list(value) == items


def test_section_and_value_repr_hide_values() -> None:
    root = parse("secrets { ike { secret = hunter2 } }")
    assert "hunter2" not in repr(root)
    assert "hunter2" not in repr(root.sections["secrets"].sections["ike"].entries)


_ALPHABET = st.sampled_from(list('abcx{}=:.,"#\\ \t\n\r-0123456789')) | st.characters()


@settings(max_examples=400, deadline=None)
@given(st.text(_ALPHABET, max_size=200))
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    files = {"/etc/swanctl/x.conf": "a { b = c }"}
    with contextlib.suppress(ConfigError):
        validate(parse(text, files))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "connections {",
                "secrets {",
                "}",
                "c : connections.c {",
                "local {",
                "children {",
                "net {",
                "version = 2",
                "remote_addrs = 1.2.3.4",
                "ike-x {",
                "secret = 0xzz",
                "include x.conf",
                "include *.conf",
                'id = "a',
            ]
        ),
        max_size=25,
    )
)
def test_structured_garbage_raises_only_config_error(lines: list[str]) -> None:
    with contextlib.suppress(ConfigError):
        validate(parse("\n".join(lines), {"/etc/swanctl/x.conf": "}"}))
