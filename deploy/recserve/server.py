"""Running the service: uvicorn with every limit a public port needs, and start-up errors as one line.

``python -m recserve [--host 0.0.0.0] [--port 8000]`` reads ``Settings.from_env`` and serves with:

- a header deadline (``RECSERVE_HEADER_TIMEOUT_SECONDS``): a connection whose request headers are not
  complete that long after it opened, or after its previous response, is closed. uvicorn arms its
  keep-alive timer only after a response and cancels it on every byte received, so without this a
  client sending nothing, or one header byte at a time, holds its socket forever;
- the body deadline and size limit of ``recserve.app.RequestGuard`` (408 / 413, then close);
- ``timeout_keep_alive`` (idle connections between requests), ``limit_concurrency`` (503 beyond that
  many connections or requests at once) and h11's ``max_incomplete_event_size`` (headers larger than
  ``RECSERVE_MAX_HEADER_BYTES`` get a 400).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from recserve.app import ConfigurationError, Settings, create_app
from recserve.registry import RegistryError

log = logging.getLogger("recserve")


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol plus a header deadline: each request's headers must be complete within
    ``header_timeout`` seconds of the connection opening or of the previous response, however the
    bytes trickle in."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # headers still incomplete
            client = "%s:%d" % self.client if self.client else "a client"
            log.info(
                "closed the connection of %s: no complete request headers within %g s", client, self.header_timeout
            )
            self.transport.close()


def protocol_with_header_deadline(seconds: float) -> type[HeaderDeadlineProtocol]:
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": seconds})


def server_config(app, settings: Settings, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration the service runs with (the tests and the benchmark use it too)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol_with_header_deadline(settings.header_timeout_seconds),
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.limit_concurrency,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recserve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    options = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        app = create_app(settings)
    except (RegistryError, ConfigurationError) as error:
        where = f" from registry {settings.registry}" if isinstance(error, RegistryError) else ""
        print(f"recserve: cannot start{where}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.Server(server_config(app, settings, options.host, options.port, options.log_level)).run()
