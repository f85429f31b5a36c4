"""``cdc-worker``: the command line. Loads the settings once and passes them down.

Exit codes: 0 done, 1 runtime failure, 2 bad configuration or unusable source server.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from prometheus_client import start_http_server

from cdc_worker.errors import CdcError, ConfigurationError, SourceError
from cdc_worker.logs import configure_logging
from cdc_worker.settings import Settings, load_settings

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdc-worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="stream the binlog into the Redis read model")
    migrate = commands.add_parser("migrate", help="apply Alembic migrations")
    migrate.add_argument("--revision", default="head")
    migrate.add_argument("--downgrade", action="store_true", help="downgrade to --revision")
    seed = commands.add_parser("seed", help="fill the schema with realistic sample data")
    seed.add_argument("--tickets", type=int, default=1000)
    seed.add_argument("--seed", type=int, default=0, help="random seed (deterministic data)")
    demo = commands.add_parser("demo", help="local servers, schema, sample data and worker")
    demo.add_argument("--tickets", type=int, default=2000)
    demo.add_argument("--state-dir", default=".state/demo")
    demo.add_argument("--once", action="store_true", help="exit after the first live change")
    return parser


def cmd_run(settings: Settings, _args: argparse.Namespace) -> int:
    """Check the source, wire the worker and stream until SIGTERM/SIGINT."""
    from cdc_worker.bootstrap import bootstrap, inspect_source

    log: Any = structlog.get_logger("cdc_worker")
    log.info("starting", config=settings.masked())
    info = inspect_source(settings)
    app = bootstrap(settings, info)
    if settings.worker_http_port:
        start_http_server(
            settings.worker_http_port, settings.worker_http_host, registry=app.metrics.registry
        )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: app.worker.request_stop())
    try:
        return app.worker.run()
    finally:
        app.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Upgrade (or downgrade) the schema with the admin URL."""
    from cdc_worker import migrate

    if args.downgrade:
        migrate.downgrade(settings.admin_url, args.revision)
    else:
        migrate.upgrade(settings.admin_url, args.revision)
    return 0


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    """Insert sample data with the admin URL and print the rate."""
    from sqlalchemy import create_engine

    from cdc_worker.seed import seed

    engine = create_engine(settings.admin_url)
    try:
        report = seed(engine, args.tickets, seed=args.seed)
    finally:
        engine.dispose()
    print(
        f"seeded {report.total_rows} rows ({args.tickets} tickets) in {report.seconds:.1f} s: "
        f"{report.rows_per_s:,.0f} rows/s"
    )
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """The README's first command: everything, locally, until Ctrl-C."""
    from cdc_worker.demo import run_demo

    return int(run_demo(settings, args))


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "run": cmd_run,
    "migrate": cmd_migrate,
    "seed": cmd_seed,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cdc-worker`` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"cdc-worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    log: Any = structlog.get_logger("cdc_worker")
    try:
        return COMMANDS[args.command](settings, args)
    except SourceError as exc:
        log.error("cannot use the source server", error=str(exc))
        return EXIT_CONFIG
    except CdcError as exc:
        log.error("failed", error=str(exc), kind=type(exc).__name__)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
