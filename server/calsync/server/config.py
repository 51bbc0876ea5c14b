"""Loading `calsync.yaml`: YAML, then `${VAR:-default}` from the environment, then types.

Config is data, checked once at start. Every problem becomes one `ConfigError` whose text
names the file and the dotted key (`calsync.yaml: server.prot: unknown option`); the CLI
prints it and exits with status 2.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from calsync.server.access import MIN_SECRET_LENGTH, Tokens
from calsync.server.envfile import read_env_file
from calsync.storage.base import BackendOptions, Storage
from calsync.storage.registry import UnknownBackend, known_backends, load_backend

DEFAULT_PATH = "calsync.yaml"
ENV_VAR = "CALSYNC_CONFIG"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
TRUE_WORDS = {"true", "yes", "on", "1"}
FALSE_WORDS = {"false", "no", "off", "0", ""}
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    """A config problem, as the one line an operator reads."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = field(default=8000, metadata={"min": 0, "max": 65535})
    allowed_origins: tuple[str, ...] = ()
    #: `Host` names the server answers to (DNS rebinding, contract 13); empty: when `host` is
    #: a loopback address, `localhost`, `127.0.0.1` and `[::1]`, otherwise any. `*`: any.
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = field(default=1_048_576, metadata={"min": 1})
    max_message_bytes: int = field(default=65_536, metadata={"min": 1})
    #: Seconds between WebSocket pings, and how long an answer may take (0 turns either off).
    ping_interval: float = field(default=20.0, metadata={"min": 0})
    ping_timeout: float = field(default=30.0, metadata={"min": 0})
    #: Seconds a keep-alive connection may wait without a request before it is closed.
    idle_timeout: float = field(default=75.0, metadata={"min": 0.1})
    #: Seconds a request's headers and body may take to arrive, from its first byte.
    body_timeout: float = field(default=30.0, metadata={"min": 0.1})
    #: Seconds requests in flight may take to finish after SIGTERM, before everything closes.
    shutdown_grace: float = field(default=10.0, metadata={"min": 0})
    #: `text` (one readable line per record) or `json` (one JSON object per line).
    log_format: str = "text"
    #: The zone clock times in event `time` fields are read in (the .ics feed).
    timezone: str = "Asia/Seoul"

    def hosts(self) -> frozenset[str] | None:
        """The `Host` names to answer, lowercase and without port; None: any."""
        if "*" in self.allowed_hosts:
            return None
        if self.allowed_hosts:
            return frozenset(name.lower() for name in self.allowed_hosts)
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        return frozenset({"localhost", "127.0.0.1", "[::1]"}) if loopback else None

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be text or json, got {self.log_format!r}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {self.timezone!r} (an IANA name such as Asia/Seoul)") from None


@dataclass(frozen=True)
class SyncConfig:
    #: How long a deleted event's tombstone is kept (fractions allowed).
    tombstone_days: float = field(default=30.0, metadata={"min": 0})
    #: How long a create's answer is kept under its Idempotency-Key.
    idempotency_hours: float = field(default=24.0, metadata={"min": 0})
    #: How long a change still being written may hold answers below it before it is taken
    #: for one whose writer died, and resolved (contract 12.2; backends shared by processes).
    gap_seconds: float = field(default=2.0, metadata={"min": 0.05, "max": 600})

    @property
    def tombstone_seconds(self) -> float:
        return self.tombstone_days * 86400

    @property
    def idempotency_seconds(self) -> float:
        return self.idempotency_hours * 3600


@dataclass(frozen=True)
class LimitsConfig:
    #: Open WebSockets at most; a handshake past it answers 503 `server_busy`.
    max_connections: int = field(default=10_000, metadata={"min": 1})
    #: Messages a connection may send per second, in bursts of twice as many.
    messages_per_second: int = field(default=50, metadata={"min": 1})
    #: Rooms one connection may be in at once.
    rooms_per_connection: int = field(default=100, metadata={"min": 1})
    #: Unsent output a connection may have queued; past it the connection is closed with 1013.
    send_buffer_bytes: int = field(default=4 * 1024 * 1024, metadata={"min": 1024})
    #: WebSockets open without a valid token yet (auth on); they count here, not against
    #: `max_connections`, so sockets that never authenticate cannot crowd out users.
    pending_auth: int = field(default=100, metadata={"min": 1})


@dataclass(frozen=True)
class IcsConfig:
    #: How long a timed event lasts in the .ics feed when its `time` names no end.
    default_minutes: int = field(default=60, metadata={"min": 1, "max": 24 * 60})


@dataclass(frozen=True)
class AuthConfig:
    #: `none` (anyone who reaches the port may do anything, as the original) or `token`.
    mode: str = "none"
    #: Signs tokens (HS256); left out of the file, `$SECRET_KEY` (the original's variable).
    secret: str = field(default="", metadata={"env": "SECRET_KEY"}, repr=False)
    #: Seconds a WebSocket may stay without a valid token before it is closed with 4401.
    timeout: float = field(default=10.0, metadata={"min": 0})

    def __post_init__(self) -> None:
        if self.mode not in ("none", "token"):
            raise ValueError(f"mode must be none or token, got {self.mode!r}")
        if self.mode == "token" and len(self.secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"secret must be at least {MIN_SECRET_LENGTH} characters when mode is token"
                             " (set it, or SECRET_KEY)")

    def tokens(self) -> Tokens | None:
        return Tokens(self.secret) if self.mode == "token" else None


@dataclass(frozen=True)
class BrokerConfig:
    #: `local`: pushes reach the clients of the process that took the write; `redis`: every
    #: process's (contract 12.3).
    backend: str = "local"
    url: str = field(default="redis://127.0.0.1:6379/0", metadata={"env": "REDIS_URL"})
    channel_prefix: str = "calsync"

    def __post_init__(self) -> None:
        if self.backend not in ("local", "redis"):
            raise ValueError(f"backend must be local or redis, got {self.backend!r}")
        if self.backend == "redis" and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"url must start with redis://, rediss:// or unix://, got {self.url!r}")


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerConfig
    sync: SyncConfig
    auth: AuthConfig
    limits: LimitsConfig
    ics: IcsConfig
    broker: BrokerConfig
    backend: str
    backend_class: type[Storage]
    storage_options: BackendOptions

    def make_storage(self) -> Storage:
        storage = self.backend_class(self.storage_options)
        storage.gap_seconds = self.sync.gap_seconds
        return storage


def config_path(explicit: str | None = None) -> str:
    """`--config`, else `$CALSYNC_CONFIG`, else `calsync.yaml` in the working folder."""
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


def load_config(path: str | None = None) -> Config:
    source = config_path(path)
    file = Path(source)
    if not file.is_file():
        raise ConfigError(f"{source}: config file not found (name another with --config or ${ENV_VAR})")
    base_dir = file.resolve().parent
    for name, value in read_env_file(base_dir / ".env").items():
        os.environ.setdefault(name, value)  # the real environment wins over .env
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: YAML error{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from None
    return _build(source, base_dir, document if document is not None else {})


def _build(source: str, base_dir: Path, document: Any) -> Config:
    reader = _SectionReader(source, base_dir)
    document = reader.mapping(document, "")
    reader.reject_unknown(document, {"server", "sync", "auth", "limits", "ics", "broker", "storage"}, "")
    server = reader.dataclass(ServerConfig, document.get("server"), "server")
    sync = reader.dataclass(SyncConfig, document.get("sync"), "sync")
    auth = reader.dataclass(AuthConfig, document.get("auth"), "auth")
    limits = reader.dataclass(LimitsConfig, document.get("limits"), "limits")
    ics = reader.dataclass(IcsConfig, document.get("ics"), "ics")
    broker = reader.dataclass(BrokerConfig, document.get("broker"), "broker")

    storage = reader.mapping(document.get("storage"), "storage")
    backend = reader.value(str, storage.get("backend", "sqlite"), "storage.backend")
    try:
        backend_class = load_backend(backend)
    except UnknownBackend as exc:
        raise ConfigError(f"{source}: storage.backend: {exc}") from None
    sections = {name: None for name in known_backends()}
    reader.reject_unknown(storage, {"backend", backend, *sections}, "storage")
    for name in sections.keys() - {backend}:
        if name in storage:  # check every section present, so a typo never waits for a switch
            reader.dataclass(load_backend(name).options_class, storage[name], f"storage.{name}")
    options = reader.dataclass(backend_class.options_class, storage.get(backend), f"storage.{backend}")
    return Config(source, server, sync, auth, limits, ics, broker, backend, backend_class, options)


class _SectionReader:
    """Turns YAML values into typed dataclasses, naming `file: dotted.key` in every error."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(self, key: str, problem: str) -> typing.NoReturn:
        raise ConfigError(f"{self.source}: {key}: {problem}" if key else f"{self.source}: {problem}")

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping of options, got {_show(value)}")
        return value

    def reject_unknown(self, section: Mapping[str, Any], allowed: set[str], key: str) -> None:
        for name in section:
            if name not in allowed:
                self.fail(f"{key}.{name}" if key else str(name), "unknown option")

    def dataclass(self, cls: type, value: Any, key: str) -> Any:
        section = self.mapping(value, key)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        self.reject_unknown(section, set(fields), key)
        hints = typing.get_type_hints(cls)
        values = {}
        for name, f in fields.items():
            raw = section[name] if name in section else _default(f)
            values[name] = self.value(hints[name], raw, f"{key}.{name}", f.metadata)
        try:
            return cls(**values)
        except (ValueError, TypeError) as exc:  # the options' own check (`__post_init__`)
            self.fail(key, str(exc))

    def value(self, kind: Any, raw: Any, key: str, limits: Mapping[str, int] | None = None) -> Any:
        if isinstance(raw, str):
            raw = self.interpolate(raw, key)
        if kind is str:
            if not isinstance(raw, str):
                self.fail(key, f"expected a string, got {_show(raw)}")
            return raw
        if kind is Path:
            if not isinstance(raw, str) or not raw:
                self.fail(key, f"expected a path, got {_show(raw)}")
            path = Path(raw).expanduser()
            return path if path.is_absolute() else self.base_dir / path
        if kind is bool:
            if isinstance(raw, str) and raw.lower() in TRUE_WORDS | FALSE_WORDS:
                return raw.lower() in TRUE_WORDS
            if not isinstance(raw, bool):
                self.fail(key, f"expected true or false, got {_show(raw)}")
            return raw
        if kind is int:
            return self.integer(raw, key, limits or {})
        if kind is float:
            return self.number(raw, key, limits or {})
        if kind == tuple[str, ...]:
            if isinstance(raw, str):  # from ${VAR}: comma-separated
                raw = [part.strip() for part in raw.split(",") if part.strip()]
            if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
                self.fail(key, f"expected a list of strings, got {_show(raw)}")
            return tuple(raw)
        raise TypeError(f"config option {key} has an unsupported type {kind}")

    def integer(self, raw: Any, key: str, limits: Mapping[str, int]) -> int:
        if isinstance(raw, str):
            try:
                raw = int(raw.strip())
            except ValueError:
                self.fail(key, f"expected an integer, got {_show(raw)}")
        if not isinstance(raw, int) or isinstance(raw, bool):
            self.fail(key, f"expected an integer, got {_show(raw)}")
        low, high = limits.get("min"), limits.get("max")
        if (low is not None and raw < low) or (high is not None and raw > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.fail(key, f"must be {bounds}, got {raw}")
        return raw

    def number(self, raw: Any, key: str, limits: Mapping[str, float]) -> float:
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                self.fail(key, f"expected a number, got {_show(raw)}")
        if not isinstance(raw, (int, float)) or isinstance(raw, bool) or raw != raw or raw in (float("inf"), float("-inf")):
            self.fail(key, f"expected a number, got {_show(raw)}")
        low = limits.get("min")
        if low is not None and raw < low:
            self.fail(key, f"must be at least {low}, got {raw}")
        return float(raw)

    def interpolate(self, text: str, key: str) -> str:
        def replace(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if default is not None:
                return value if value else default
            if value is None:
                self.fail(key, f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)")
            return value

        return VARIABLE.sub(replace, text)


def _default(f: dataclasses.Field) -> Any:
    """An option's value when the file leaves it out. An option with `metadata={"env": NAME}`
    takes `$NAME` when that is set and not empty (as `${NAME:-default}` would)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    default = f.default
    if "env" in f.metadata:
        default = os.environ.get(f.metadata["env"]) or default
    if isinstance(default, Path):
        return str(default)
    if isinstance(default, tuple):
        return list(default)
    return default


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)
