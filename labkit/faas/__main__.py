"""``python -m labkit.faas``: run the OpenWhisk-compatible FaaS runner.

The auth key is read from ``LABKIT_FAAS_AUTH`` (``uuid:key``), never from the
command line, so it does not show up in ``ps``. It is never printed. With
``--tls-cert`` and ``--tls-key`` the runner serves HTTPS only, so the key never
crosses a connection in clear (labkit passes the lab's certificate, labkit.stack.tls).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from labkit.faas.config import AUTH_ENV, RunnerSettings, default_max_workers, parse_auth

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The CLI of the runner."""
    p = argparse.ArgumentParser(
        prog="python -m labkit.faas",
        description=f"OpenWhisk-compatible FaaS runner. Auth comes from ${AUTH_ENV} ('uuid:key').",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=3233, help="port to bind (default 3233, like OpenWhisk standalone)")
    p.add_argument("--data-dir", type=Path, required=True, help="where actions and activations.jsonl are kept")
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM; needs --tls-key)")
    p.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM; needs --tls-cert)")
    p.add_argument("--idle-timeout-s", type=_positive_float, default=600.0,
                   help="stop warm workers idle this long (default 600)")
    p.add_argument("--max-workers", type=_positive_int, default=default_max_workers(),
                   help="cap on worker processes across all actions (default 2 x CPUs)")
    p.add_argument("--blocking-timeout-s", type=_positive_float, default=60.0,
                   help="blocking invokes answer 202 with the id after this long (default 60, as OpenWhisk)")
    p.add_argument("--max-payload-bytes", type=_positive_int, default=1024 * 1024,
                   help="largest invocation body and action result (default 1 MiB, as OpenWhisk)")
    p.add_argument("--max-action-bytes", type=_positive_int, default=48 * 1024 * 1024,
                   help="largest action PUT body (default 48 MiB, as OpenWhisk)")
    p.add_argument("--activation-ring", type=_positive_int, default=10_000,
                   help="activations kept in memory (default 10000)")
    p.add_argument("--api-host", default="", help="__OW_API_HOST given to actions (default: this runner's URL)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, check the auth key, serve until SIGTERM/SIGINT.

    Args:
        argv: Arguments without the program name.

    Returns:
        Exit status (2 for a missing or malformed key).
    """
    args = build_parser().parse_args(argv)
    try:
        auth = parse_auth(os.environ.get(AUTH_ENV))
    except ValueError as exc:
        print(f"labkit.faas: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if (args.tls_cert is None) != (args.tls_key is None):
        print("labkit.faas: --tls-cert and --tls-key go together", file=sys.stderr)
        return EXIT_USAGE
    settings = RunnerSettings(
        auth=auth,
        data_dir=args.data_dir.resolve(),
        host=args.host,
        port=args.port,
        idle_timeout_s=args.idle_timeout_s,
        max_workers=args.max_workers,
        blocking_timeout_s=args.blocking_timeout_s,
        max_action_bytes=args.max_action_bytes,
        max_payload_bytes=args.max_payload_bytes,
        activation_ring=args.activation_ring,
        api_host=args.api_host,
        tls=args.tls_cert is not None,
    )
    import uvicorn  # late: keep `--help` and the auth check fast

    from labkit.faas.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)

    class Server(uvicorn.Server):
        """Stops the workers before uvicorn waits for open requests to finish."""

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await app.state.service.stop_workers()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=3,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )
    Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
