"""The HTTP server: uvicorn's, ending the open event streams as soon as it starts to stop.

On SIGTERM or SIGINT uvicorn stops accepting connections and waits for every response
in progress to finish before the application shuts down; an event stream never finishes
by itself, so the server would wait for it forever. This server ends the streams first
(each ends its response cleanly; the clients reconnect with Last-Event-ID), and
`GRACEFUL_SHUTDOWN_SECONDS` bounds the wait for any other slow response.
"""

from __future__ import annotations

import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

GRACEFUL_SHUTDOWN_SECONDS = 30


def end_streams(app: object) -> None:
    """End the event streams of `app`, if it has opened any."""
    hub = getattr(app.state, "events", None) if isinstance(app, FastAPI) else None
    if hub is not None:
        hub.end_streams()


class Server(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        end_streams(self.config.app)
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn raises the signal again once it has shut down, so the process would
        # end by it (exit code 143); after a complete shutdown it exits 0, as the
        # scheduler and worker roles do.
        self._captured_signals.clear()


def server(
    app: FastAPI, *, host: str, port: int, log_level: str, forwarded_allow_ips: list[str],
) -> Server:
    """`forwarded_allow_ips`: the proxies whose X-Forwarded-For gives the client's address
    (`Settings.trusted_proxies`); none, the address is the connection's."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                            forwarded_allow_ips=forwarded_allow_ips)
    return Server(config)
