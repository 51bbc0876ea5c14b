"""Who may do what (contract 9.1): tokens, and the role × department rules.

A token is a JWT signed with HS256 by anyone holding `auth.secret` (calsync itself, or a
company's login gateway). PyJWT verifies it with the algorithm pinned, so a token cannot
choose `none` or another algorithm, and compares signatures in constant time. What a
verified token allows is a `Grant`; with `auth.mode: none` everyone holds `OPEN`.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Iterable

import jwt

from calsync.storage.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"
ROLES = ("read", "write", "admin")
MIN_SECRET_LENGTH = 32
DURATION = re.compile(r"^(\d+)([smhd]?)$")
SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Grant:
    """What one token allows. `departments` None means every department."""

    sub: str
    role: str
    departments: frozenset[str] | None
    expires_at: float = math.inf

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_read(self, department_id: str) -> bool:
        return self.is_admin or self.departments is None or department_id in self.departments

    def can_write(self, department_id: str) -> bool:
        return self.role in ("write", "admin") and self.can_read(department_id)

    def require_read(self, department_id: str) -> None:
        if not self.can_read(department_id):
            raise Forbidden()

    def require_write(self, department_id: str) -> None:
        if not self.can_write(department_id):
            raise Forbidden()

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden()


#: `auth.mode: none`, as the original server: everyone may do everything.
OPEN = Grant(sub="", role="admin", departments=None)


def parse_duration(text: str) -> int:
    """`30d`, `12h`, `15m`, `90s` or plain seconds."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"expected a duration such as 30d, 12h, 15m or 90s, got {text!r}")
    return int(match.group(1)) * SECONDS[match.group(2)]


class Tokens:
    """Issues and verifies tokens signed with one secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"auth.secret must be at least {MIN_SECRET_LENGTH} characters")
        self._secret = secret

    def issue(self, role: str, departments: Iterable[str] | str = "*", ttl_seconds: int = 30 * 86400,
              subject: str = "calsync-cli", now: float | None = None) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        issued = int(time.time() if now is None else now)
        claims = {"sub": subject, "role": role, "departments": departments if departments == "*" else list(departments),
                  "iat": issued, "exp": issued + ttl_seconds}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Grant:
        """The grant of a valid token; `Unauthorized` for anything else (bad signature, another
        algorithm, expired, malformed, missing or wrong claims)."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": ["exp", "sub", "role"]})
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise Unauthorized() from None
        sub, role, departments = claims.get("sub"), claims.get("role"), claims.get("departments", [])
        if not isinstance(sub, str) or role not in ROLES:
            raise Unauthorized()
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise Unauthorized()  # a NumericDate (RFC 7519); PyJWT would take "1735689600" too
        if departments == "*":
            allowed = None
        elif isinstance(departments, list) and all(isinstance(d, str) for d in departments):
            allowed = frozenset(departments)
        else:
            raise Unauthorized()
        return Grant(sub=sub, role=role, departments=allowed, expires_at=float(claims["exp"]))


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
