"""jobs/ask.py's main on a tiny finished run: questions answered in-process, why a passage matched, bad input."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from xqg.ask.cli import main


def ask(*argv: str, stdin: str = "") -> tuple[int, str]:
    """(exit status, stdout) of one in-process call."""
    out = io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


def answers(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def rank_of(answer: dict, docid: str) -> int | None:
    return next((h["rank"] for h in answer["hits"] if h["docid"] == docid), None)


def test_a_generated_query_finds_its_passage_near_the_top_and_says_why(ask_run, config_file, tmp_path):
    questions = ask_run["questions"]
    qfile = tmp_path / "questions.txt"
    qfile.write_text("\n".join(q["question"] for q in questions) + "\n\n", encoding="utf-8")  # a blank line: skipped
    code, out = ask("--config", str(config_file), "--json", "--top", "5", "--file", str(qfile))
    assert code == 0
    got = answers(out)
    # every generated query of the passage, nearest first: the default shows the first 3 of them
    code, out = ask("--config", str(config_file), "--json", "--top", "5", "--why", "4", "--file", str(qfile))
    assert code == 0
    every = answers(out)
    assert [a["question"] for a in got] == [q["question"] for q in questions], "one answer per line, in order"
    for q, a, e in zip(questions, got, every):
        assert a["index"] == "xqg", "the fused set is the default index once built"
        assert len(a["hits"]) == 5 and [h["rank"] for h in a["hits"]] == [1, 2, 3, 4, 5]
        scores = [h["score"] for h in a["hits"]]
        assert scores == sorted(scores, reverse=True)
        assert rank_of(a, q["docid"]) is not None, f"{q['id']}: gold passage not in the top 5"
        gold = next(h for h in a["hits"] if h["docid"] == q["docid"])
        row = next(r for r in ask_run["rows"] if r["docid"] == q["docid"])
        assert gold["title"] == row["title"] and row["text"].startswith(gold["passage"].rstrip("…"))
        why = gold["why"]
        why_all = next(h for h in e["hits"] if h["docid"] == q["docid"])["why"]
        assert [w["score"] for w in why_all] == sorted((w["score"] for w in why_all), reverse=True)
        assert why == why_all[:3], "the nearest generated queries are shown, nearest first"
        assert q["question"] in [w["query"] for w in why_all], "the generated query that is the question is there"
        if q["lang"] in ("ar", "ja"):  # the script names the language: only its queries are shown
            assert a["lang"] == q["lang"] and {w["lang"] for w in why} == {q["lang"]}
            assert q["question"] in [w["query"] for w in why], "the generated query that is the question is shown"
        else:  # Latin script names none: every language's queries compete (the question and 3 fillers)
            assert a["lang"] is None and len(why) == 3 and len(why_all) == 4


def test_fusion_is_what_finds_them_the_baseline_does_not(ask_run, config_file):
    questions = ask_run["questions"]
    code, out = ask("--config", str(config_file), "--json", "--index", "baseline", "--top", "5",
                    *[q["question"] for q in questions])
    assert code == 0
    got = answers(out)
    found = sum(rank_of(a, q["docid"]) is not None for q, a in zip(questions, got))
    assert found <= len(questions) // 3, "the untrained encoder alone finds few gold passages"
    assert all(a["index"] == "baseline" and all("why" not in h for h in a["hits"]) for a in got)


def test_text_output_and_stdin(ask_run, config_file):
    q = ask_run["questions"][0]
    code, out = ask("--config", str(config_file), "--top", "3", "--why", "1", stdin=f"{q['question']}\n\n  \n")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"? {q['question']}") and "[index xqg, lang ar]" in lines[0]
    ranked = [line.split() for line in lines if line[:3].strip().isdigit()]
    assert [int(r[0]) for r in ranked] == [1, 2, 3]
    assert q["docid"] in [r[1] for r in ranked]
    assert sum(line.strip().startswith("why [") for line in lines) == 3, "--why 1: one query per passage"


@pytest.mark.parametrize("argv, message", [
    (["   "], "question is empty"),
    (["x" * 30, "--set", "ask.max_question_chars=20"], "at most 20"),
    (["where?", "--index", "nope"], "unknown index 'nope'"),
    (["where?", "--index", "../baseline"], "plain name"),
    (["where?", "--top", "0"], "top_k"),
    (["where?", "--top", "101"], "top_k"),
    (["where?", "--lang", "xx"], "unknown language"),
])
def test_bad_input_exits_2_with_a_message(config_file, capsys, argv, message):
    code, out = ask("--config", str(config_file), *argv)
    assert code == 2 and out == ""
    assert message in capsys.readouterr().err


def test_no_question_at_all_exits_2(config_file, capsys):
    assert ask("--config", str(config_file), stdin="\n \n")[0] == 2
    assert "no question" in capsys.readouterr().err


def copy_run(ask_run, config_file: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny run and a config pointing at it."""
    root = tmp_path / "copy"
    shutil.copytree(ask_run["root"], root)
    cfg = yaml.safe_load(config_file.read_text())
    cfg["run_dir"] = str(root)
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return root, path


def test_a_retrained_encoder_makes_the_index_stale(ask_run, config_file, tmp_path, capsys):
    root, cfg = copy_run(ask_run, config_file, tmp_path)
    meta = json.loads((root / "models/dr/xqg_dr.json").read_text())
    meta["pooling"] = "cls"  # the bi-encoder now encodes otherwise than the index's passages were
    (root / "models/dr/xqg_dr.json").write_text(json.dumps(meta))
    assert ask("--config", str(cfg), "where?")[0] == 2
    err = capsys.readouterr().err
    assert "stale" in err and "another bi-encoder" in err


def test_a_redone_source_makes_the_index_stale(ask_run, config_file, tmp_path, capsys):
    root, cfg = copy_run(ask_run, config_file, tmp_path)
    marker = root / "_done/fuse/xqg/shard=00001.json"
    data = json.loads(marker.read_text())
    data["fingerprint"] = "0" * 16  # fuse redid shard 1 since the index was built
    marker.write_text(json.dumps(data))
    (root / "_done/fuse.cache.json").unlink(missing_ok=True)
    assert ask("--config", str(cfg), "--index", "xqg", "where?")[0] == 2
    assert "fuse/xqg/shard=00001 changed" in capsys.readouterr().err
    assert ask("--config", str(cfg), "--index", "baseline", "where?")[0] == 0, "the baseline is still current"


def test_a_run_without_its_encoder_or_index_exits_2(ask_run, config_file, tmp_path, capsys):
    root, cfg = copy_run(ask_run, config_file, tmp_path)
    shutil.rmtree(root / "models/dr")
    assert ask("--config", str(cfg), "where?")[0] == 2
    assert "query encoder is missing" in capsys.readouterr().err
    shutil.rmtree(root / "index")
    assert ask("--config", str(cfg), "where?")[0] == 2
    assert "has no complete index" in capsys.readouterr().err


def test_xqg_ask_and_jobs_ask_are_the_same_command(ask_run, config_file, capsys):
    from xqg.cli import job_main
    from xqg.cli import main as xqg_main

    q = ask_run["questions"][1]
    argv = ["--config", str(config_file), "--json", "--top", "3", q["question"]]
    assert xqg_main(["ask", *argv]) == 0
    via_xqg = json.loads(capsys.readouterr().out)
    assert job_main("ask", argv) == 0  # what jobs/ask.py runs
    assert json.loads(capsys.readouterr().out) == via_xqg and via_xqg["question"] == q["question"]
    assert xqg_main(["ask", "--config", str(config_file), ""]) == 2
