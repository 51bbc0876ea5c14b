"""schemathesis hooks for tests/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

A well-formed `Idempotency-Key` is made unique per request. schemathesis draws keys from
their pattern and so sends `0` again and again; calsync then does what contract 8.3 says —
replays the first create (whose record may have been deleted since) or answers 422 for
another body — which schemathesis would report as a created resource not found or a valid
request refused. Malformed keys are left as drawn, so their 400 is still checked.
"""
from __future__ import annotations

import uuid

import schemathesis

from calsync.handlers.preconditions import IDEMPOTENCY_KEY


@schemathesis.hook
def before_call(ctx, case, **kwargs) -> None:
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.match(key):
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
