"""`python -m calsync` is the `calsync` command."""
import sys

from calsync.cli import main

sys.exit(main())
