"""Log output: `server.log_format` picks readable text or one JSON object per line.

Access and WebSocket lines carry their parts as `extra={"fields": {...}}`, so the JSON form
has them as keys (`method`, `path`, `status`, `ms`, `client`, `sub`, `code`) for a log
pipeline to filter on, while the text form reads as one sentence. Nothing that reaches a
log is a token, a secret or an event's body (contract 9.4): callers pass only these parts.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTROL = re.compile("[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\x0a`): a value a client chose (a token's
    `sub`) can never start a line of its own in a log."""
    return CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(log_format: str = "text") -> None:
    """Send every record at INFO and above to stderr in the chosen form; quiet the libraries
    whose own lines would repeat ours (Tornado's access log) or drown them (botocore)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
