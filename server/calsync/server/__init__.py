"""The server process: app factory, config, CLI, the hub and its timers."""
