"""The release number, read by setup.cfg (statically) and shown by `calsync --version`."""

__version__ = "0.1.0"
