"""The `connector` command: serve, worker (dispatcher alone), migrate, purge, replay, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time

import structlog
import uvicorn

from connector import demo, logs
from connector.api import deadletters
from connector.app import Front, create_app
from connector.errors import BadRequest, ConnectorError
from connector.server import HttpProtocol
from connector.services import Services
from connector.settings import Settings, SettingsError


def app_from_env() -> Front:
    """Uvicorn factory: each worker process reads the environment itself."""
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)


def _warn_if_open(settings: Settings) -> None:
    """One line when anyone who can reach /sms/send can get signed reports sent anywhere."""
    if not settings.platform_key and not settings.callback_hosts:
        structlog.get_logger("connector.cli").warning(
            "platform_calls_unauthenticated",
            detail="neither CONNECTOR_PLATFORM_KEY nor CONNECTOR_CALLBACK_HOSTS is set: any "
                   "caller can send and have signed delivery reports posted to any public URL; "
                   "set both in production")


def _serve(settings: Settings, workers: int) -> None:
    _warn_if_open(settings)
    # Migrate once before forking workers so they never race on a fresh file.
    asyncio.run(_migrate(settings))
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several processes serve /metrics: each writes its counters where any can read them.
        shared = settings.data_dir / "prometheus"
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
    # proxy_headers off: nothing reads the client address or scheme (the public URL is
    # CONNECTOR_PUBLIC_URL, the access log is off), and uvicorn's ProxyHeadersMiddleware
    # wrapped every request in a layer that rewrote them (#11). HttpProtocol is uvicorn's
    # httptools protocol with less work per request (connector/server.py).
    uvicorn.run(
        "connector.cli:app_from_env", factory=True, host=settings.host, port=settings.port,
        workers=workers, access_log=False, log_level="warning", loop="uvloop",
        http=HttpProtocol, lifespan="on", timeout_graceful_shutdown=15, proxy_headers=False,
    )


async def _migrate(settings: Settings) -> None:
    services = Services.build(settings)
    await services.store.open()
    await services.store.close()


async def _worker(settings: Settings) -> None:
    services = Services.build(settings)
    await services.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, services.dispatcher.stop)
    try:
        await services.dispatcher.run()
    finally:
        await services.close()


async def _purge(settings: Settings) -> int:
    services = Services.build(settings)
    await services.store.open()
    try:
        return await services.store.purge(time.time() - settings.dedupe_retention)
    finally:
        await services.store.close()


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    which = deadletters.dead_filter(args.host, args.since, args.until)
    if not args.id and not deadletters.filter_given(which) and not args.all:
        raise BadRequest("give --id, a filter (--host, --since, --until) or --all")
    services = Services.build(settings)
    await services.store.open()
    try:
        return await deadletters.replay_now(services, which, args.id or None)
    finally:
        await services.store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="connector", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the web service and the report dispatcher")
    serve.add_argument("--workers", type=int, default=1, help="web worker processes")
    commands.add_parser("worker", help="run the report dispatcher alone")
    commands.add_parser("migrate", help="apply schema migrations and exit")
    commands.add_parser("purge", help="forget messages older than the retention and exit")
    replay = commands.add_parser(
        "replay", help="queue dead-lettered reports for delivery again and print how many")
    replay.add_argument("--id", type=int, action="append", help="outbox id (repeatable)")
    replay.add_argument("--host", help="only reports to this callback URL host")
    replay.add_argument("--since", help="dead-lettered at or after (RFC 3339, e.g. ...Z)")
    replay.add_argument("--until", help="dead-lettered before (RFC 3339)")
    replay.add_argument("--all", action="store_true", help="every dead letter")
    commands.add_parser("demo", help="show one message's round trip on loopback, no account")
    args = parser.parse_args(argv)
    if args.command == "demo":
        logs.configure("warning", "console")
        return 0 if asyncio.run(demo.run()) else 1
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "serve":
        _serve(settings, args.workers)
    elif args.command == "worker":
        asyncio.run(_worker(settings))
    elif args.command == "migrate":
        asyncio.run(_migrate(settings))
    elif args.command == "replay":
        try:
            print(f"replayed {asyncio.run(_replay(settings, args))} dead letters")
        except ConnectorError as exc:
            print(f"connector replay: {exc.message}", file=sys.stderr)
            return 2 if isinstance(exc, BadRequest) else 1
    else:
        print(f"purged {asyncio.run(_purge(settings))} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
