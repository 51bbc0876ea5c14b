"""`AppContext`: everything `make_app` wires together, in one typed object.

Handlers read `self.context.calendar`, `self.context.limits`, ... instead of string keys in
Tornado's settings: a typo is a type error, and a newcomer finds every dependency here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from calsync.server.access import Tokens
from calsync.server.answers import SyncAnswers
from calsync.server.calendar import Calendar
from calsync.server.config import LimitsConfig
from calsync.server.hub import Broker
from calsync.server.inflight import InFlight
from calsync.server.metrics import Metrics


@dataclass
class AppContext:
    calendar: Calendar
    broker: Broker
    answers: SyncAnswers
    metrics: Metrics
    #: The storage backend's name, as `/` and `/ready` show it.
    backend_name: str
    version: str
    #: None when `auth.mode` is `none`.
    tokens: Tokens | None = None
    auth_timeout: float = 10.0
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    in_flight: InFlight = field(default_factory=InFlight)
    #: WebSockets open that have not authenticated yet (limits.pending_auth).
    pending_auth: int = 0
    idempotency_seconds: float = 24 * 3600.0
    allowed_origins: tuple[str, ...] = ()
    #: `Host` names answered (lowercase, no port); None: any.
    allowed_hosts: frozenset[str] | None = None
    max_body_bytes: int = 1_048_576
    #: The zone clock times are read in, and an event's length when its time gives none (.ics).
    timezone: str = "Asia/Seoul"
    ics_default_minutes: int = 60
    #: How long `/ready` waits for storage.
    ready_timeout: float = 5.0
    #: The OpenAPI document, built on first request.
    openapi_json: str | None = None
