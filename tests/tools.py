"""Outside tools some tests run (Chromium, and the npm packages in tests/node/).

Without one such a test is skipped with the reason shown, so the suite runs on a laptop
that lacks them; CI sets `CALSYNC_REQUIRE_TOOLS=1` and installs them all (.ci/run), so there
a missing tool fails instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

NODE_MODULES = Path(__file__).parent / "node" / "node_modules"
REQUIRED = os.environ.get("CALSYNC_REQUIRE_TOOLS") == "1"


def require(path: Path | str, how: str) -> Path:
    """`path`, which must exist; `how` says how to install it."""
    found = Path(path)
    if not found.exists():
        reason = f"no {found} ({how})"
        if REQUIRED:
            pytest.fail(f"{reason}; CALSYNC_REQUIRE_TOOLS=1 makes that a failure")
        pytest.skip(reason)
    return found


def node_tool(relative: str) -> Path:
    """A file of an npm package of tests/node/package.json."""
    return require(NODE_MODULES / relative, "npm ci --prefix tests/node")
