"""calsync: a realtime calendar sync server (REST + WebSocket rooms) on pluggable storage."""

__version__ = "0.1.0"
