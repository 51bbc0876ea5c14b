"""The `calsync` command: serve, create-tables, migrate.

Every problem an operator can cause (bad config, storage that cannot start, a port in
use, bad arguments) is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import ipaddress
import logging
import os
import signal
import sys
from typing import Callable, Sequence

import tornado.httpserver
import tornado.netutil

from calsync.app import make_app
from calsync.handlers.connections import HttpServer
from calsync.migrations.runner import MigrateOptions, SourceError, migrate
from calsync.server.access import ROLES, Tokens, parse_duration
from calsync.server.config import Config, ConfigError, load_config
from calsync.server.housekeeping import Housekeeping
from calsync.server.hub import Hub
from calsync.server.inflight import InFlight
from calsync.server.logs import configure_logging
from calsync.server.redisbroker import RedisBroker
from calsync.server.version import __version__
from calsync.storage.base import Storage
from calsync.storage.errors import StorageSetupError

log = logging.getLogger("calsync")
CLOSE_SECONDS = 5.0  # for WebSocket close handshakes after the grace period
STORAGE_CLOSE_SECONDS = 3.0  # for storage calls still running after that


class CliError(Exception):
    """A problem worth one line on stderr and exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="calsync", description="Realtime calendar sync server.")
    parser.add_argument("--version", action="version", version=f"calsync {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    def command(name: str, help: str) -> ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--config", metavar="PATH", help="config file (default: $CALSYNC_CONFIG or calsync.yaml)")
        return sub

    serve = command("serve", "run the server until SIGINT or SIGTERM")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port, 0 for any free one (overrides server.port)")
    serve.add_argument("--processes", type=int, default=1, metavar="N",
                       help="N server processes on the one port, to use N cores (default 1; 0: one per core)")
    serve.set_defaults(run=run_serve)

    create = command("create-tables", "prepare storage: tables and indexes, schema or folder")
    create.set_defaults(run=run_create_tables)

    migrate = command("migrate", "copy departments and events into the configured backend, then verify")
    migrate.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                         help="a folder of the original server's JSON files, or a config file naming another backend")
    migrate.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")
    migrate.add_argument("--default-department", metavar="NAME",
                         help="department for events with none, 0, or an unknown one (created when missing)")
    migrate.add_argument("--skip-invalid", action="store_true", help="write the valid records, list the others")
    migrate.add_argument("--quiet", action="store_true", help="print only problems and the outcome")
    migrate.set_defaults(run=run_migrate)

    token = commands.add_parser("token", help="tokens for auth.mode: token", description="tokens for auth.mode: token")
    token_commands = token.add_subparsers(dest="token_command", required=True, parser_class=ArgumentParser)
    issue = token_commands.add_parser("issue", help="print a signed token on stdout",
                                      description="print one token, signed with auth.secret, on stdout")
    issue.add_argument("--config", metavar="PATH", help="config file (default: $CALSYNC_CONFIG or calsync.yaml)")
    issue.add_argument("--role", required=True, choices=ROLES)
    issue.add_argument("--departments", default="*", metavar="ID,ID|*",
                       help="the departments it may use, or * for all (ignored for admin)")
    issue.add_argument("--ttl", default="30d", help="lifetime: 30d, 12h, 15m, 90s (default 30d)")
    issue.add_argument("--subject", default="calsync-cli", metavar="NAME", help="who it is for (the sub claim)")
    issue.set_defaults(run=run_token_issue)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("text")
    try:
        return args.run(args)
    except (ConfigError, StorageSetupError, CliError) as exc:
        say_problem(exc)
        return 2
    except KeyboardInterrupt:
        return 130


def say_problem(exc: BaseException) -> None:
    """One line on stderr, whatever a driver said."""
    print(f"calsync: {' '.join(str(exc).split())}", file=sys.stderr)


def run_token_issue(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        tokens = Tokens(config.auth.secret)
    except ValueError as exc:
        raise CliError(f"{config.source}: {exc} (set auth.secret or SECRET_KEY)") from None
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise CliError(f"--ttl: {exc}") from None
    departments = "*" if args.departments.strip() == "*" else [d.strip() for d in args.departments.split(",") if d.strip()]
    print(tokens.issue(args.role, departments, ttl, args.subject))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if "port" in overrides and not 0 <= overrides["port"] <= 65535:
        raise CliError(f"--port: must be between 0 and 65535, got {overrides['port']}")
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, **overrides))
    processes = args.processes if args.processes > 0 else (os.cpu_count() or 1)
    if args.processes < 0 or processes > 256:
        raise CliError(f"--processes: must be between 0 and 256, got {args.processes}")
    if config.backend in ("json", "memory") and processes > 1:
        raise CliError(f"--processes {processes}: storage.backend {config.backend} serves one process only"
                       " (use sqlite or dynamodb)")
    try:
        sockets = tornado.netutil.bind_sockets(config.server.port, config.server.host)
    except OSError as exc:
        raise CliError(f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}") from None
    if processes == 1:
        asyncio.run(serve(config, sockets))
        return 0
    if config.broker.backend == "local":
        log.warning("%d processes with broker: local: a push reaches only the clients of the process that took"
                    " the write (the others catch up on their next sync); set broker: redis to share rooms",
                    processes)
    return supervise(processes, lambda: asyncio.run(serve(config, sockets)))


def supervise(count: int, run: Callable[[], None]) -> int:
    """Fork `count` processes that each `run()` on the sockets bound before, pass SIGINT and
    SIGTERM on to them, and wait for all: the exit status is the worst of theirs. A child
    that dies is not restarted here (systemd restarts the whole unit)."""
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                run()
                code = 0
            except (ConfigError, StorageSetupError, CliError) as exc:
                say_problem(exc)
                code = 2
            except BaseException:
                log.exception("a server process failed")
                code = 1
            logging.shutdown()
            os._exit(code)
        children.append(pid)

    def forward(signum: int, frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for child in children:
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        worst = max(worst, os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
    return worst


def make_broker(config: Config, storage: Storage) -> Hub:
    """`broker.backend`: this process's rooms alone, or every process's through Redis."""
    if config.broker.backend == "redis":
        return RedisBroker(storage, config.broker.url, config.broker.channel_prefix, config.sync.gap_seconds,
                           presence_ttl=config.server.ping_timeout + 10)
    return Hub()


async def serve(config: Config, sockets: list) -> None:
    configure_logging(config.server.log_format)
    storage = config.make_storage()
    hub: Hub | None = None
    try:
        await storage.open()
        hub = make_broker(config, storage)
        await hub.start()
        app = make_app(storage, hub, config.server, config.backend, config.sync, config.auth.tokens(),
                       config.auth.timeout, config.limits, config.ics)
        housekeeping = Housekeeping(storage, hub.connections, config.server, config.sync)
        http_server = HttpServer(app, idle_timeout=config.server.idle_timeout,
                                 body_timeout=config.server.body_timeout)
        http_server.add_sockets(sockets)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        await housekeeping.start()
        tune_garbage_collector()
        port = sockets[0].getsockname()[1]
        if config.auth.mode == "none" and not is_loopback(config.server.host):
            log.warning("auth.mode is none and the server listens on %s: anyone who can reach it may read and"
                        " change every calendar. Turn on auth.mode: token before exposing it.", config.server.host)
        log.info("calsync %s serving on http://%s:%d (storage: %s)", __version__, config.server.host, port, storage.describe())
        await stopping.wait()

        await shut_down(http_server, app.settings["context"].in_flight, hub, housekeeping, config.server.shutdown_grace)
    finally:
        if hub is not None:
            await hub.stop()
        await close_storage(storage)


async def close_storage(storage: Storage) -> None:
    """Close storage within `STORAGE_CLOSE_SECONDS`. A driver call that does not come back
    (an endpoint that stopped answering) would hold the process forever, since Python joins
    worker threads at exit: then the process exits at once instead. Nothing acknowledged is
    lost by that (every acknowledged write was durable before its answer), and a write cut
    short is one the client was never told succeeded."""
    try:
        await asyncio.wait_for(storage.close(), STORAGE_CLOSE_SECONDS)
    except asyncio.TimeoutError:
        log.warning("storage calls still running %g s after shutdown; exiting without waiting for them",
                    STORAGE_CLOSE_SECONDS)
        logging.shutdown()
        os._exit(0)


async def shut_down(http_server: tornado.httpserver.HTTPServer, in_flight: InFlight, hub: Hub,
                    housekeeping: Housekeeping, grace: float) -> None:
    """Stop accepting, let requests in flight finish within `grace` seconds, then close every
    WebSocket with 1001 and every remaining connection (contract 9.4)."""
    http_server.stop()
    housekeeping.stop()
    log.info("shutting down: no new connections; waiting up to %g s for %d requests in flight", grace, in_flight.count)
    if not await in_flight.drained(grace):
        log.warning("%d requests still in flight after %g s; closing anyway", in_flight.count, grace)
    hub.close_all(1001, "server shutting down")
    try:
        await asyncio.wait_for(http_server.close_all_connections(), CLOSE_SECONDS)
    except asyncio.TimeoutError:
        log.warning("connections still open after %g s; exiting anyway", CLOSE_SECONDS)
    log.info("closing storage")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def tune_garbage_collector() -> None:
    """Keep full collections rare: with a thousand live connections each one walks every
    object for ~100 ms and stalls every push meanwhile (measured by tests/bench).

    Objects made at start-up (modules, config, storage) are frozen out of the scans, and a
    larger first threshold lets each push's short-lived objects die by reference counting
    before a collection can promote them.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run_migrate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    options = MigrateOptions(source=args.source, open_config=lambda path: load_config(path).make_storage(),
                             default_department=args.default_department, dry_run=args.dry_run,
                             skip_invalid=args.skip_invalid, quiet=args.quiet)

    async def run() -> int:
        target = config.make_storage()
        try:
            return await migrate(options, target, sys.stdout)
        finally:
            await target.close()

    try:
        return asyncio.run(run())
    except SourceError as exc:
        raise CliError(str(exc)) from None


def run_create_tables(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    async def create() -> list[str]:
        storage = config.make_storage()
        try:
            return await storage.create_tables()
        finally:
            await storage.close()

    for line in asyncio.run(create()):
        print(line)
    return 0
