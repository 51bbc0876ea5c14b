"""Finding a backend class by the name in `storage.backend`.

Backends are plugins: installed packages register them under the entry-point group
`calsync.storage` (ours: memory, sqlite, json, dynamodb); any class can also be named
directly as `package.module:ClassName`.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from calsync.storage.base import Storage

ENTRY_POINT_GROUP = "calsync.storage"


class UnknownBackend(Exception):
    """The name matches no installed backend; the text says which names are known."""


def known_backends() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_backend(name: str) -> type[Storage]:
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if matches:
        try:
            cls = matches[0].load()
        except Exception as exc:  # ImportError inside the plugin, a missing driver, a syntax error
            raise UnknownBackend(f"storage backend '{name}' ({matches[0].value}) cannot be loaded:"
                                 f" {type(exc).__name__}: {exc}") from None
    elif ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # not found, or broken inside
            raise UnknownBackend(f"storage backend '{name}': cannot import {module_name}"
                                 f" ({type(exc).__name__}: {exc})") from None
        cls = getattr(module, class_name, None)
        if cls is None:
            raise UnknownBackend(f"storage backend '{name}': {module_name} has no class {class_name}")
    else:
        raise UnknownBackend(
            f"unknown storage backend '{name}'; known backends: {', '.join(known_backends())}"
            " (or name a class as package.module:ClassName)"
        )
    if not (isinstance(cls, type) and issubclass(cls, Storage)):
        raise UnknownBackend(f"storage backend '{name}' is not a calsync Storage class")
    return cls
