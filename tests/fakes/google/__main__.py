"""`python -m tests.fakes.google --port PORT [--seed]`: the fake on its own, with `/_fake/`."""

from __future__ import annotations

import argparse

import uvicorn

from .server import FakeGoogle


def main() -> None:
    parser = argparse.ArgumentParser(description="A strict fake of Google OAuth, Gmail, Drive.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", action="store_true",
                        help="a seeded mailbox and Drive for alice@example.com")
    args = parser.parse_args()
    fake = FakeGoogle(seed=args.seed)
    sock = fake.bind(args.port)
    print(f"fake Google listening on {fake.url}", flush=True)
    print(f"OAuth client id {fake.CLIENT_ID}, secret {fake.CLIENT_SECRET}", flush=True)
    uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", lifespan="off")).run(
        sockets=[sock]
    )


if __name__ == "__main__":
    main()
