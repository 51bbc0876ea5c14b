"""`python -m server` is the `calsync` command."""
import sys

from server.cli import main

sys.exit(main())
