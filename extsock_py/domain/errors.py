"""Errors of the domain: each names what the user must fix."""

from __future__ import annotations

from dataclasses import dataclass


class ExtsockError(Exception):
    """Base of every error extsock reports to a user."""


@dataclass(eq=False)  # not frozen: raising sets __traceback__
class ConfigError(ExtsockError):
    """A configuration that cannot be used: where it is, what is wrong, what is accepted."""

    file: str
    line: int | None
    key: str | None
    message: str
    accepted: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: "
        if self.key:
            text += f"key '{self.key}': "
        text += self.message
        if self.accepted:
            text += f": expected {self.accepted}"
        return text


class CharonError(ExtsockError):
    """charon refused a command or could not be reached."""


class CharonUnreachable(CharonError):
    """The VICI socket is gone or refuses connections."""


class CharonCommandFailed(CharonError):
    """charon answered a command with `success = no`: the command and charon's errmsg, as
    fields (the text, `<command> failed: CommandException: <errmsg>`, is for reading only)."""

    def __init__(self, command: str, errmsg: str) -> None:
        super().__init__(f"{command} failed: CommandException: {errmsg}")
        self.command = command
        self.errmsg = errmsg
