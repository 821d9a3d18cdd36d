"""The app on a real uvicorn server inside the test's own process and event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI


@asynccontextmanager
async def serving(app: FastAPI, port: int) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1:`port` until the block ends; yields its base URL. On the
    way out open event streams end first, as on SIGTERM (browsers reconnect)."""
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=5,
    ))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
        await asyncio.sleep(0.02)  # polling the server's own start flag, not a timing guess
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        hub = getattr(app.state, "events", None)
        if hub is not None:
            hub.end_streams()
        server.should_exit = True
        await task
