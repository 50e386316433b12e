"""A local S3 server (moto's server mode) that counts the HTTP requests it serves, for request-count tests and the
bookkeeping benchmark.

In a test: `with CountingS3Server() as s3: run = RunDir(s3.uri("bucket/run"))`, then `s3.counts()` ({kind: n},
kinds LIST, HEAD, GET, PUT, DELETE, POST, COPY) and `s3.reset()`. As its own process (the benchmark: a server in
the measured process would share its GIL):

    python tests/s3_server.py --port 5123          # serves until killed; GET /_xqg/counts, POST /_xqg/reset
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

CONTROL = "/_xqg/"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def request_kind(method: str, path: str, query: str, headers: dict[str, str]) -> str:
    """What one S3 request is: LIST (a bucket listing), COPY (a PUT with a copy source) or the HTTP method."""
    bucket_level = path.strip("/").count("/") == 0
    if method == "GET" and bucket_level and query.split("=", 1)[0] != "location":
        return "LIST"
    if method == "PUT" and headers.get("HTTP_X_AMZ_COPY_SOURCE"):
        return "COPY"
    return method


class RequestCounter:
    """WSGI middleware: counts each request by kind, and answers the control paths itself."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app, self.lock, self.counts = app, threading.Lock(), Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL):
            with self.lock:
                body = json.dumps(dict(self.counts)).encode()
                if path.endswith("reset"):
                    self.counts.clear()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        kind = request_kind(environ["REQUEST_METHOD"], path, environ.get("QUERY_STRING", ""), environ)
        with self.lock:
            self.counts[kind] += 1
        return self.app(environ, start_response)


class CountingS3Server:
    """moto's S3 in a thread of this process on 127.0.0.1 (a free port), counting requests; a context manager."""

    def __init__(self, port: int = 0) -> None:
        self.port, self._server, self._thread, self.counter = port, None, None, None

    def start(self) -> CountingS3Server:
        """Start serving; set the fake credentials pyarrow needs in this process's environment."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
        os.environ.update(CREDENTIALS)
        self.counter = RequestCounter(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", self.port, self.counter, threaded=True,
                                   request_handler=MotoRequestHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="moto-s3")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._thread.join()
            self._server = None

    def __enter__(self) -> CountingS3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """host:port, as pyarrow's endpoint_override wants it."""
        return f"127.0.0.1:{self.port}"

    def uri(self, bucket_and_path: str) -> str:
        """An s3:// URI on this server (the bucket is created)."""
        return s3_uri(self.endpoint, bucket_and_path)

    def counts(self) -> dict[str, int]:
        """Requests served since the last reset, by kind."""
        return control(self.endpoint, "counts")

    def reset(self) -> None:
        """Start counting from zero."""
        control(self.endpoint, "reset")


def s3_uri(endpoint: str, bucket_and_path: str) -> str:
    """s3://bucket/path on a local endpoint (plain http), creating the bucket if needed."""
    import pyarrow.fs as pafs

    os.environ.update({k: v for k, v in CREDENTIALS.items() if k not in os.environ})
    bucket = bucket_and_path.strip("/").split("/", 1)[0]
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1", allow_bucket_creation=True,
                           access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
        fs.create_dir(bucket)
    return f"s3://{bucket_and_path.strip('/')}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def control(endpoint: str, what: str) -> dict[str, int]:
    """GET the counts (or reset them) from a counting server, in this process or another."""
    method = "POST" if what == "reset" else "GET"
    with urllib.request.urlopen(urllib.request.Request(f"http://{endpoint}{CONTROL}{what}", method=method)) as r:
        return json.loads(r.read())


def main() -> None:
    """Serve until killed (for a benchmark that measures another process)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    server = CountingS3Server(args.port).start()
    print(f"counting S3 server on {server.endpoint}", flush=True)
    server._thread.join()


if __name__ == "__main__":
    main()
