"""`python -m calsync` is the `calsync` command."""
import sys

from calsync.server.cli import main

sys.exit(main())
