"""Exceptions raised by mappa_env for misuse of the API and broken infrastructure.

Failures of agent code and of coaches are never exceptions: they are data in step records.
Bad configuration values raise :class:`ValueError` with a message that says how to fix them.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every mappa_env exception."""


class UnregisteredEnv(Error, KeyError):
    """``make`` was called with an id that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RegistrationError(Error):
    """An environment id was registered twice or with a malformed id."""
