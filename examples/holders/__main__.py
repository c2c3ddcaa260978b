"""Command line of the demo holders: serve one or all of them, or pair a citizen at Tiers.

    python -m examples.holders electricity --port 5101 --tiers-url URL --resource-uri URI
    python -m examples.holders all [--base-port 5101]
    python -m examples.holders pair --tiers-url URL --client-id ID --client-secret S \
        CODE SUBJECT DATASET
    python -m examples.holders pair --credentials FILE CODE SUBJECT DATASET

Environment: TIERS_URL, HOLDER_SEED, HOLDER_HOST, HOLDER_FAULT (every holder) or
HOLDER_FAULT_<NAME> (one holder): `down[:s]`, `slow[:ms]`, `malformed[:json|fields]`;
HOLDER_CLIENT_ID and HOLDER_CLIENT_SECRET for `pair`, so the secret stays out of shell history,
or `--credentials`: a JSON file with `client_id` and `client_secret` (the demo seed writes one
per holder, `instance/demo-holder-<organisation>-api.json`), which wins over both.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from . import DEFAULT_SEED, NAMES, build
from .app import Fault, create_app
from .pairing import Pairing, PairingError, TiersClient

DEFAULT_TIERS_URL = "http://127.0.0.1:5000"
DEFAULT_HOST = "127.0.0.1"
BASE_PORT = 5101
DEFAULT_PORTS = {name: BASE_PORT + offset for offset, name in enumerate(NAMES)}

log = logging.getLogger("examples.holders")


@dataclass(frozen=True)
class Service:
    name: str
    app: Flask
    host: str
    port: int
    resource_uri: str


def fault_for(name: str, given: str | None = None) -> Fault:
    """The fault asked on the command line, else HOLDER_FAULT_<NAME>, else HOLDER_FAULT."""
    spec = given or os.environ.get(f"HOLDER_FAULT_{name.upper()}") or os.environ.get("HOLDER_FAULT")
    return Fault.parse(spec)


def service(
    name: str,
    *,
    host: str,
    port: int,
    tiers_url: str,
    seed: str,
    resource_uri: str | None = None,
    fault: str | None = None,
) -> Service:
    """One holder's app, configured; its resource URI defaults to its own base URL."""
    uri = resource_uri or f"http://{host}:{port}"
    app = create_app(
        build(name, seed), tiers_url=tiers_url, resource_uri=uri, fault=fault_for(name, fault)
    )
    return Service(name, app, host, port, uri)


def serve(services: list[Service]) -> int:
    """Serve each app on its port, in threads, until Ctrl-C or SIGTERM."""
    servers: list[BaseWSGIServer] = []
    try:
        for item in services:
            servers.append(make_server(item.host, item.port, item.app, threaded=True))
    except OSError as exc:
        for server in servers:
            server.server_close()
        print(f"cannot listen: {exc} (is another holder already running?)", file=sys.stderr)
        return 1
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    for item in services:
        fault = item.app.config["HOLDER_FAULT"]
        extra = f" [fault: {fault.mode}]" if fault.mode != "none" else ""
        print(
            f"{item.name:<12} http://{item.host}:{item.port}/datasets  "
            f"(resource {item.resource_uri}){extra}",
            flush=True,
        )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


def read_credentials(path: Path) -> tuple[str, str]:
    """The client id and secret in the JSON file at `path`; ValueError saying what is wrong."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ValueError(f"{path} is not JSON") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a JSON object")
    client_id, client_secret = saved.get("client_id"), saved.get("client_secret")
    if not isinstance(client_id, str) or not isinstance(client_secret, str):
        raise ValueError(f"{path} has no client_id and client_secret")
    return client_id, client_secret


def _pair(args: argparse.Namespace) -> int:
    client_id, client_secret = args.client_id, args.client_secret
    if args.credentials is not None:
        try:
            client_id, client_secret = read_credentials(args.credentials)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    if not client_id or not client_secret:
        print(
            "give --credentials, or --client-id and --client-secret (or HOLDER_CLIENT_ID/SECRET)",
            file=sys.stderr,
        )
        return 2
    client = TiersClient(args.tiers_url, client_id, client_secret)
    try:
        result = client.pair(Pairing(args.code.strip(), args.subject.strip(), args.dataset))
    except PairingError as exc:
        print(f"pairing failed: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(result, ensure_ascii=False))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m examples.holders", description="The demo data holders of Tiers."
    )
    commands = root.add_subparsers(dest="command", required=True)

    def common(command: argparse.ArgumentParser) -> None:
        command.add_argument("--host", default=os.environ.get("HOLDER_HOST", DEFAULT_HOST))
        command.add_argument(
            "--tiers-url",
            default=os.environ.get("TIERS_URL", DEFAULT_TIERS_URL),
            help="Tiers' issuer: tokens' iss, and where its JWKS is",
        )
        command.add_argument(
            "--seed", default=os.environ.get("HOLDER_SEED", DEFAULT_SEED), help="data seed"
        )
        command.add_argument(
            "--fault", default=None, help="down[:s] | slow[:ms] | malformed[:json|fields]"
        )

    for name in NAMES:
        one = commands.add_parser(name, help=f"serve the {name} holder")
        common(one)
        one.add_argument("--port", type=int, default=DEFAULT_PORTS[name])
        one.add_argument(
            "--resource-uri", default=None, help="tokens' aud (default: this holder's base URL)"
        )
    every = commands.add_parser("all", help="serve all four on consecutive ports")
    common(every)
    every.add_argument("--base-port", type=int, default=BASE_PORT)

    pair = commands.add_parser("pair", help="link a citizen's pairing code to a subject at Tiers")
    pair.add_argument("--tiers-url", default=os.environ.get("TIERS_URL", DEFAULT_TIERS_URL))
    pair.add_argument("--client-id", default=os.environ.get("HOLDER_CLIENT_ID"))
    pair.add_argument("--client-secret", default=os.environ.get("HOLDER_CLIENT_SECRET"))
    pair.add_argument(
        "--credentials",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON with client_id and client_secret (instead of the two options)",
    )
    pair.add_argument("code", help="the one-time code the citizen got on Tiers' portal")
    pair.add_argument("subject", help="the holder's own id for the citizen (PRM, PCE, card)")
    pair.add_argument("dataset", help="Tiers' id of the dataset")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "pair":
        return _pair(args)
    logging.basicConfig(level=logging.INFO, format="[holders] %(name)s %(message)s")
    try:
        if args.command == "all":
            services = [
                service(
                    name,
                    host=args.host,
                    port=args.base_port + offset,
                    tiers_url=args.tiers_url,
                    seed=args.seed,
                    fault=args.fault,
                )
                for offset, name in enumerate(NAMES)
            ]
        else:
            services = [
                service(
                    args.command,
                    host=args.host,
                    port=args.port,
                    tiers_url=args.tiers_url,
                    seed=args.seed,
                    resource_uri=args.resource_uri,
                    fault=args.fault,
                )
            ]
    except ValueError as exc:  # a bad fault spec
        print(str(exc), file=sys.stderr)
        return 2
    return serve(services)


if __name__ == "__main__":
    sys.exit(main())
