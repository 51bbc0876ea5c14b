"""calsync: a realtime calendar sync server (REST + WebSocket rooms) on pluggable storage.

Installed, everything lives under this one package: `calsync.server` (app factory, config,
CLI, hub), `calsync.handlers` (REST and WebSocket), `calsync.storage` (backends) and
`calsync.migrations`. In the repository those are the top-level folders `server/`,
`handlers/`, `storage/` and `migrations/`; `setup.cfg` maps them here (`package_dir`).
"""

__version__ = "0.1.0"
