"""The ask HTTP app on Ray Serve: `POST /search` with {"question", "top_k", "index", "lang"} returns the answer as
JSON (the same as `jobs/ask.py --json`).

Each replica loads the run's query encoder and index shards once (a Searcher); questions arriving together are
encoded and searched as one batch (serve.batch); replicas autoscale between ask.min_replicas and ask.max_replicas.
Safe by default: the HTTP proxy listens on 127.0.0.1 unless ask.host says otherwise; a request names no file (the
index is a name checked against the indexes the replica serves); the body size, question length and top_k are
bounded. Bad requests get 400 (malformed, empty or over-long question, top_k out of range), 404 (unknown index or
path), 405 (not POST), 413 (body too large); a run whose index or encoder is missing or stale fails at start.

Start it with `xqg serve --config FILE` (main below; also `python jobs/serve.py`), or with Serve's own CLI:
`serve run xqg.ask.serve:build_app config=configs/demo.yaml`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from ray import serve

from xqg.ask.searcher import Ask, AskError
from xqg.config import Config

log = logging.getLogger(__name__)

ROUTE = "/search"
FIELDS = frozenset({"question", "top_k", "index", "lang"})


def _error(message: str, status: int) -> Any:
    """A JSON error response."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


@serve.deployment(name="ask")
class AskDeployment:
    """One replica: a Searcher over the run (loaded once), a batched search behind POST /search."""

    def __init__(self, config: dict[str, Any], indexes: list[str] | None = None) -> None:
        from xqg.ask.searcher import Searcher

        self.config = Config.model_validate(config)
        limits = self.config.ask
        # torch gets the CPUs the replica asked Ray for: replicas on one node do not fight over cores
        self.searcher = Searcher(self.config, indexes, threads=max(1, int(limits.replica_cpus)))
        self.search_batch.set_max_batch_size(limits.max_batch_size)
        self.search_batch.set_batch_wait_timeout_s(limits.batch_wait_timeout_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def search_batch(self, asks: list[Ask]) -> list[dict[str, Any]]:
        """Questions that arrived together: one encoder call and one search per index."""
        # In a thread: the event loop keeps taking requests, which form the next batch meanwhile.
        return await asyncio.to_thread(self.searcher.search, asks)

    async def __call__(self, request: Any) -> Any:
        """POST /search: validate the JSON body, answer it in a batch; 4xx with {"error"} for a bad request."""
        from starlette.responses import JSONResponse

        limits = self.config.ask
        if request.url.path.rstrip("/") != ROUTE:
            return _error(f"not found: POST {ROUTE} is the only route", 404)
        if request.method != "POST":
            return _error(f"{request.method} not allowed: POST {ROUTE}", 405)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limits.max_request_bytes):
            return _error(f"request body over {limits.max_request_bytes} bytes", 413)
        body = b""
        async for chunk in request.stream():  # bounded read: a body without a length cannot grow past the limit
            body += chunk
            if len(body) > limits.max_request_bytes:
                return _error(f"request body over {limits.max_request_bytes} bytes", 413)
        try:
            payload = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            return _error("the body must be a JSON object", 400)
        if not isinstance(payload, dict):
            return _error('the body must be a JSON object {"question", "top_k", "index", "lang"}', 400)
        unknown = sorted(set(payload) - FIELDS)
        if unknown:
            return _error(f"unknown field(s) {unknown}: expected {sorted(FIELDS)}", 400)
        try:
            ask = self.searcher.check(payload.get("question"), payload.get("top_k"), payload.get("index"),
                                      payload.get("lang"))
        except AskError as e:
            return _error(str(e), e.status)
        return JSONResponse(await self.search_batch(ask))


def deployment_options(config: Config) -> dict[str, Any]:
    """Replica resources and autoscaling from ask.* (the same on a laptop and on a cluster)."""
    a = config.ask
    return {
        "autoscaling_config": {
            "min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
            "initial_replicas": max(1, a.min_replicas), "target_ongoing_requests": a.target_ongoing_requests,
        },
        "ray_actor_options": {"num_cpus": a.replica_cpus},
        # a replica holds at most a few batches: beyond that requests wait in the proxy, where autoscaling sees them
        "max_ongoing_requests": max(2 * a.max_batch_size, int(a.target_ongoing_requests * 2)),
    }


def build(config: Config, indexes: list[str] | None = None) -> Any:
    """The Serve application of a run (replicas get the config as plain data, the run directory absolute)."""
    from xqg.rundir import RunDir

    # A replica's working directory is not the caller's: a relative run_dir would point elsewhere there.
    portable = config.model_copy(update={"run_dir": RunDir(config.run_dir).worker_uri})
    return AskDeployment.options(**deployment_options(config)).bind(portable.model_dump(mode="json"), indexes)


def build_app(args: dict[str, str]) -> Any:
    """Application builder for `serve run xqg.ask.serve:build_app config=FILE [index=NAME] [set=k=v;k=v]`."""
    from xqg.config import load_config

    overrides = [s for s in args.get("set", "").split(";") if s]
    config = load_config(args.get("config"), overrides)
    return build(config, [args["index"]] if args.get("index") else None)


def start(config: Config, indexes: list[str] | None = None, name: str = "xqg-ask") -> str:
    """Start Serve's HTTP proxy on ask.host:ask.port and deploy the app; its URL."""
    serve.start(http_options={"host": config.ask.host, "port": config.ask.port})
    serve.run(build(config, indexes), name=name, route_prefix="/", blocking=False)
    return f"http://{config.ask.host}:{config.ask.port}{ROUTE}"


def main(argv: list[str] | None = None) -> int:
    """Check the run, start the app on the configured Ray (local when none), serve until interrupted."""
    from xqg.ask.searcher import Searcher
    from xqg.jobargs import base_parser, check_run_dir, init_ray
    from xqg.config import ConfigError, load_config

    p = base_parser("Serve a finished run's indexes over HTTP (POST /search) with Ray Serve.")
    p.add_argument("--index", action="append", help="index to serve (repeatable; default: every complete index)")
    p.add_argument("--host", help="listen address (default ask.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default ask.port)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        for key, value in (("host", args.host), ("port", args.port)):
            if value is not None:
                setattr(config.ask, key, value)
        check_run_dir(config.run_dir)
        # Freshness and names are checked here, before any replica starts; the driver loads no model or shard.
        Searcher(config, args.index, load=False)
    except (AskError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import signal

    import ray

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # `kill PID` stops it like Ctrl-C: Serve and the local Ray shut down cleanly

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also where a background job was started with SIGINT ignored
    init_ray(config)
    try:
        url = start(config, args.index)
        print(f"serving {config.run_dir} at {url} (Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
