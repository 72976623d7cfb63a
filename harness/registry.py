"""Name -> lazily imported object. Adding a backend or a scenario touches one file and one registry line."""

import importlib

from harness.errors import UnknownNameError


class Registry:
    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = entries  # name -> "module:attribute"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def check(self, name: str) -> None:
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, self.names())

    def get(self, name: str):
        self.check(name)
        module, attribute = self._entries[name].split(":")
        return getattr(importlib.import_module(module), attribute)
