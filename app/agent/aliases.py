"""Short ids for the model: m1, t1, f1 instead of Gmail's and Drive's long ones.

A run shows the model each message, thread and file under a short alias, numbered in
the order the run first sees them; the model reads and cites by alias and the app turns
an alias back into the real id. Real ids are accepted too. Aliases live for one run
(a paused run keeps them in its state).
"""

from __future__ import annotations

from typing import Literal

AliasKind = Literal["message", "thread", "file"]
PREFIX: dict[str, str] = {"message": "m", "thread": "t", "file": "f"}


class Aliases:
    def __init__(self) -> None:
        self._alias: dict[tuple[str, str], str] = {}
        self._real: dict[str, tuple[str, str]] = {}
        self._count: dict[str, int] = dict.fromkeys(PREFIX, 0)

    def alias(self, kind: str, real_id: str) -> str:
        """The item's alias, given on first sight."""
        key = (kind, real_id)
        found = self._alias.get(key)
        if found is None:
            self._count[kind] += 1
            found = f"{PREFIX[kind]}{self._count[kind]}"
            while found in self._real:  # restored aliases keep their numbers
                self._count[kind] += 1
                found = f"{PREFIX[kind]}{self._count[kind]}"
            self.keep(kind, real_id, found)
        return found

    def keep(self, kind: str, real_id: str, alias: str) -> None:
        """Take back an alias given before (a resumed run)."""
        if alias in self._real or (kind, real_id) in self._alias:
            return
        self._alias[(kind, real_id)] = alias
        self._real[alias] = (kind, real_id)

    def get(self, kind: str, real_id: str) -> str | None:
        return self._alias.get((kind, real_id))

    def real(self, kind: str, value: str) -> str:
        """The real id of an alias of this kind; any other value as it is (a real id)."""
        found = self._real.get(value)
        return found[1] if found is not None and found[0] == kind else value
