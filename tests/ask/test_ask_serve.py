"""The ask app on a real Ray Serve, on localhost, asked by a real HTTP client: the CLI's ranking, and 4xx."""

from __future__ import annotations

import io
import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from xqg.ask.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(ask_run, ray_local):
    """The app over the tiny run on 127.0.0.1 (one replica asking Ray for no CPU: the session's Ray has 2)."""
    from ray import serve

    from xqg.ask.serve import start

    config = ask_run["config"].model_copy(deep=True)
    config.ask.port = free_port()
    config.ask.replica_cpus = 0
    config.ask.max_replicas = 1
    url = start(config, name="xqg-ask-test")
    yield url
    serve.shutdown()


def post(url: str, body: bytes | dict, method: str = "POST") -> tuple[int, dict]:
    """(status, JSON body) of one request; 4xx answers are read like any other."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data if method == "POST" else None, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_it_listens_on_localhost_only(served):
    assert served.startswith("http://127.0.0.1:")


def test_http_gives_the_cli_ranking(served, ask_run, config_file):
    questions = [q["question"] for q in ask_run["questions"]]
    out = io.StringIO()
    assert main(["--config", str(config_file), "--json", "--top", "5", *questions], stdout=out) == 0
    cli = [json.loads(line) for line in out.getvalue().splitlines()]
    # 8 clients at once: the replica batches what arrives together; each answer is still its own question's
    with ThreadPoolExecutor(8) as pool:
        http = list(pool.map(lambda q: post(served, {"question": q, "top_k": 5}), questions))
    for q, want, (status, got) in zip(questions, cli, http):
        assert status == 200 and got["question"] == q and got["index"] == want["index"] == "xqg"
        assert [(h["rank"], h["docid"]) for h in got["hits"]] == [(h["rank"], h["docid"]) for h in want["hits"]]
        for g, w in zip(got["hits"], want["hits"]):
            assert g["score"] == pytest.approx(w["score"], rel=1e-4, abs=1e-4)
            assert [x["query"] for x in g["why"]] == [x["query"] for x in w["why"]]
    status, base = post(served, {"question": questions[0], "top_k": 3, "index": "baseline", "lang": "ar"})
    assert status == 200 and base["index"] == "baseline" and len(base["hits"]) == 3 and base["lang"] == "ar"


@pytest.mark.parametrize("body, status, message", [
    ({"question": ""}, 400, "question is empty"),
    ({"question": "  \n "}, 400, "question is empty"),
    ({"question": "x" * 1001}, 400, "at most 1000"),
    ({"question": 7}, 400, "must be a string"),
    ({"question": "where?", "top_k": 0}, 400, "top_k"),
    ({"question": "where?", "top_k": 101}, 400, "top_k"),
    ({"question": "where?", "top_k": "5"}, 400, "top_k"),
    ({"question": "where?", "index": "nope"}, 404, "unknown index 'nope'"),
    ({"question": "where?", "index": "../../etc/passwd"}, 400, "plain name"),
    ({"question": "where?", "file": "/etc/passwd"}, 400, "unknown field"),
    ({"question": "where?", "lang": "xx"}, 400, "unknown language"),
    (b"{not json", 400, "JSON object"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"question": "y" * 20_000}).encode(), 413, "over 16384 bytes"),
])
def test_bad_requests_get_a_4xx_with_a_message(served, body, status, message):
    got, payload = post(served, body)
    assert got == status and message in payload["error"]


def test_other_routes_and_methods(served):
    assert post(served.replace("/search", "/admin"), {"question": "where?"})[0] == 404
    status, payload = post(served, b"", method="GET")
    assert status == 405 and "POST" in payload["error"]


def test_serve_main_refuses_an_unfinished_index_before_starting_anything(ask_run, config_file, tmp_path, capsys):
    import shutil

    import yaml

    from xqg.ask import serve as serve_module

    root = tmp_path / "copy"
    shutil.copytree(ask_run["root"], root)
    (root / "index/xqg/manifest.json").unlink()  # an index rebuild that did not finish
    cfg = yaml.safe_load(config_file.read_text())
    cfg["run_dir"] = str(root)
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert serve_module.main(["--config", str(path), "--index", "xqg"]) == 2
    assert "unknown index 'xqg'" in capsys.readouterr().err


def test_replicas_and_batching_come_from_the_config(config_file):
    from xqg.ask.serve import build_app, deployment_options
    from xqg.config import load_config

    config = load_config(str(config_file), ["ask.min_replicas=2", "ask.max_replicas=4", "ask.replica_cpus=2"])
    options = deployment_options(config)
    assert options["autoscaling_config"]["min_replicas"] == 2 and options["autoscaling_config"]["max_replicas"] == 4
    assert options["ray_actor_options"] == {"num_cpus": 2.0}
    assert type(build_app({"config": str(config_file), "set": "ask.max_batch_size=4;ask.why=0"})).__name__ == "Application"
    with pytest.raises(ValueError, match="nope"):  # `serve run ... set=` overrides are validated like --set
        build_app({"config": str(config_file), "set": "ask.nope=1"})
