"""cluster.yaml as a new user runs it (`ray up`): permissions, placement, syncing, and an idempotent set-up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from helpers.paths import REPO

SETUP = REPO / "cluster" / "setup_node.sh"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def workers(cluster: dict) -> dict[str, dict]:
    return {k: v for k, v in cluster["available_node_types"].items() if k != cluster["head_node_type"]}


def test_head_keeps_the_autoscaler_role_and_runs_no_work(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    # A head profile of our own replaces ray-autoscaler-v1, the role that lets the autoscaler launch workers.
    assert "IamInstanceProfile" not in head["node_config"]
    assert "IamInstanceProfile" not in cluster.get("head_node", {})
    assert head["resources"] == {"CPU": 0}, "no task or actor may land on the head"


def test_workers_scale_from_zero_on_spot_with_s3_access(cluster):
    types = workers(cluster)
    assert types and any("g" in t["node_config"]["InstanceType"][:2] for t in types.values()), "a GPU worker type"
    for name, t in types.items():
        assert t["min_workers"] == 0, name
        assert t["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}, name
        assert t["node_config"]["IamInstanceProfile"] == {"Name": "ray-autoscaler-v1"}, name


def test_local_environment_and_outputs_are_never_synced(cluster):
    assert cluster["file_mounts"] == {"/home/ray/xqg": "."}
    assert {".venv", "runs", ".git"} <= set(cluster["rsync_exclude"])
    assert ".gitignore" in cluster["rsync_filter"]


def test_nodes_run_the_tested_ray_and_the_idempotent_setup(cluster):
    from importlib.metadata import version

    assert cluster["docker"]["image"].startswith(f"rayproject/ray:{version('ray')}-py311-gpu")
    assert cluster["setup_commands"] == ["bash /home/ray/xqg/cluster/setup_node.sh"]
    assert f"FROM {cluster['docker']['image']}" in (REPO / "cluster" / "Dockerfile").read_text()


# A stand-in for the node's python: `-m pip` keeps installed packages as files in a folder (faiss-cpu and
# faiss-gpu-* both own the `faiss` module, as the real wheels do) and logs every install; `-c` checks faiss.
FAKE_PYTHON = textwrap.dedent('''
    import os, re, subprocess, sys
    state = os.environ["FAKE_SITE"]
    os.makedirs(state, exist_ok=True)
    def log(line):
        with open(os.path.join(state, "_log"), "a") as f:
            f.write(line + "\\n")
    def name_of(spec):
        return re.split(r"[<>=!~\\[ ;]", spec, maxsplit=1)[0].strip()
    def version_of(spec, index):
        v = spec.split("==", 1)[1] if "==" in spec else "1.0"
        return v + ("+cu128" if name_of(spec) == "torch" and "cu128" in (index or "") else "")
    def install(spec, index=None, force=False):
        name = name_of(spec)
        path = os.path.join(state, name)
        if os.path.exists(path) and not force:
            return
        open(path, "w").write(version_of(spec, index))
        if name.startswith("faiss"):
            open(os.path.join(state, "_faiss_module"), "w").write(name)
        log("install " + name)
    args = sys.argv[1:]
    if args[:2] == ["-m", "pip"]:
        cmd, rest = args[2], args[3:]
        if cmd == "show":
            path = os.path.join(state, rest[0])
            if not os.path.exists(path):
                sys.exit(1)
            print("Name: " + rest[0] + "\\nVersion: " + open(path).read())
        elif cmd == "uninstall":
            for name in [r for r in rest if not r.startswith("-")]:
                if os.path.exists(os.path.join(state, name)):
                    os.remove(os.path.join(state, name))
                    if name.startswith("faiss") and os.path.exists(os.path.join(state, "_faiss_module")):
                        os.remove(os.path.join(state, "_faiss_module"))  # the shared module goes with it
                    log("uninstall " + name)
        elif cmd == "install":
            index, force, specs, i = None, "--force-reinstall" in rest, [], 0
            while i < len(rest):
                a = rest[i]
                if a in ("--index-url", "-c"):
                    index = rest[i + 1] if a == "--index-url" else index
                    i += 2
                    continue
                if a == "-r":
                    specs += [l.strip() for l in open(rest[i + 1]) if l.strip()]
                    i += 2
                    continue
                if a == "-e":
                    specs.append("xqg")
                    i += 2
                    continue
                if not a.startswith("-"):
                    specs.append(a)
                i += 1
            for s in specs:
                install(s, index, force)
    elif args[:1] == ["-c"]:
        module = open(os.path.join(state, "_faiss_module")).read() if os.path.exists(os.path.join(state, "_faiss_module")) else ""
        sys.exit(0 if module.startswith("faiss-gpu") else "faiss is not the GPU build: " + (module or "missing"))
    elif args[:1] == ["-"]:
        sys.exit(subprocess.run([sys.executable, "-"], stdin=sys.stdin).returncode)
''')


def run_setup(tmp_path: Path) -> subprocess.CompletedProcess:
    fake = tmp_path / "fake_python.py"
    fake.write_text(FAKE_PYTHON)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PYTHON": str(wrapper), "XQG_DIR": str(REPO), "FAKE_SITE": str(tmp_path / "site"),
           "XQG_SETUP_STATE": str(tmp_path / "state")}
    return subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=60)


def installs(tmp_path: Path) -> list[str]:
    log = tmp_path / "site" / "_log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def test_setup_twice_installs_once_and_never_puts_faiss_cpu_over_faiss_gpu(tmp_path):
    first = run_setup(tmp_path)
    assert first.returncode == 0, first.stderr
    done = installs(tmp_path)
    assert "install torch" in done and "install faiss-gpu-cu12" in done and "install xqg" in done
    assert "install faiss-cpu" not in done
    assert (tmp_path / "site" / "torch").read_text() == "2.13.0+cu128", "the pinned CUDA build"
    again = run_setup(tmp_path)
    assert again.returncode == 0, again.stderr
    assert installs(tmp_path) == done, "a second set-up changes nothing"


def test_setup_repairs_a_node_where_faiss_cpu_was_installed(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "faiss-cpu").write_text("1.9.0")  # what `pip install -e .` leaves
    (site / "_faiss_module").write_text("faiss-cpu")
    result = run_setup(tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (site / "faiss-cpu").exists() and (site / "_faiss_module").read_text() == "faiss-gpu-cu12"


# ---- cluster.yaml as written, node self-check, installs --------------------------------------------------------
DLAMI_SSM = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def test_every_node_type_boots_the_cuda12_deep_learning_ami(cluster):
    # Without an ImageId Ray boots its default AMI (a CUDA 11 driver) under the cu128 torch containers.
    for name, t in cluster["available_node_types"].items():
        assert t["node_config"].get("ImageId") == DLAMI_SSM, name


def test_dashboard_only_on_the_heads_loopback(cluster):
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in (REPO / "cluster.yaml").read_text(), "nothing bound to every interface"
    for doc in ("README.md", "docs/cluster.md"):
        assert "<head-ip>:8265" not in (REPO / doc).read_text(), f"{doc} must not send users to a public port"


def test_gpu_nodes_fail_their_setup_when_the_gpu_stack_does_not_work(cluster):
    gpu = cluster["available_node_types"]["gpu_worker"]
    assert gpu["worker_setup_commands"] == ["python -m xqg.installcheck --gpu"]
    from xqg import installcheck

    # on this machine (no GPU, faiss-cpu) every GPU check fails, each by name, and the exit status says so
    problems = installcheck.run_checks(gpu=True)
    assert [p.split(":")[0] for p in problems] == ["torch GPU", "CTranslate2 GPU", "FAISS GPU"]
    assert installcheck.main(["--gpu"]) == 1
    assert installcheck.main([]) == 0, "exactly one FAISS package here"


def test_two_faiss_packages_are_an_install_error(monkeypatch):
    from xqg import installcheck

    monkeypatch.setattr(installcheck, "faiss_distributions", lambda: ["faiss-cpu", "faiss-gpu-cu12"])
    assert "2 FAISS distributions" in installcheck.check_faiss_packages()
    assert installcheck.main([]) == 1


def test_ray_train_waits_for_gpu_nodes_to_boot(cluster, monkeypatch):
    from ray.train.v2._internal import constants

    from xqg.train.driver import WORKER_GROUP_START_TIMEOUT_ENV, worker_group_start_timeout_s

    # the variable Ray 2.60 reads, and the driver's value reaches Ray Train's controller
    assert WORKER_GROUP_START_TIMEOUT_ENV == constants.WORKER_GROUP_START_TIMEOUT_S_ENV_VAR
    assert WORKER_GROUP_START_TIMEOUT_ENV in constants.ENV_VARS_TO_PROPAGATE
    monkeypatch.delenv(WORKER_GROUP_START_TIMEOUT_ENV, raising=False)
    assert worker_group_start_timeout_s() >= 900 > constants.DEFAULT_WORKER_GROUP_START_TIMEOUT_S
    monkeypatch.setenv(WORKER_GROUP_START_TIMEOUT_ENV, "120")
    assert worker_group_start_timeout_s() == 120, "the environment wins"
    for cmd in cluster["head_start_ray_commands"][1:] + cluster["worker_start_ray_commands"][1:]:
        assert f"{WORKER_GROUP_START_TIMEOUT_ENV}=1800 ray start" in cmd


def test_a_memory_request_no_node_type_holds_is_a_config_error_naming_the_option(cluster, monkeypatch):
    from xqg.capacity import CONFIG_ENV, check_fits

    monkeypatch.setenv(CONFIG_ENV, str(REPO / "cluster.yaml"))
    gib = 1 << 30
    check_fits(80 * gib, gpus=0, option="index.shard_size", what="index xqg")  # r6i.4xlarge: 128 GiB x 0.7
    check_fits(20 * gib, gpus=1, option="index.shard_size", what="index xqg")  # g5.2xlarge: 32 GiB x 0.7
    with pytest.raises(ValueError, match=r"index\.shard_size.*|largest: cpu_worker \(r6i\.4xlarge\)") as e:
        check_fits(100 * gib, gpus=0, option="index.shard_size", what="index xqg")
    assert "index.shard_size" in str(e.value) and "cpu_worker (r6i.4xlarge), 89.6 GiB" in str(e.value)
    with pytest.raises(ValueError) as e:
        check_fits(30 * gib, gpus=1, option="index.shard_size", what="index xqg")
    assert "gpu_worker (g5.2xlarge), 22.4 GiB" in str(e.value)
    monkeypatch.setenv(CONFIG_ENV, str(REPO / "no-such-file.yaml"))
    check_fits(10_000 * gib, gpus=0, option="x", what="y")  # node types unknown (no autoscaler): never refused


def test_a_waiting_stage_says_what_it_waits_for(caplog):
    from xqg.tasks import WaitLog

    w = WaitLog("index xqg", num_gpus=1, memory=3 << 30, every_s=60)
    assert 0 < w.timeout() <= 60
    line = w.say(5, 8)
    assert "5 of 8 unit(s)" in line and "3.0 GiB memory + 1 GPU" in line and line in caplog.text


def test_a_stage_blocked_in_a_stream_says_what_it_waits_for_until_it_moves(caplog):
    import threading
    import time

    from xqg.tasks import WaitLog

    w, stop = WaitLog("generate", num_gpus=1, memory=0, every_s=0.3), threading.Event()
    thread = w.watch(lambda: 7, 9, stop)
    time.sleep(1.0)  # nothing finishes: a line at every interval
    said = caplog.text.count("generate: 7 of 9 unit(s) not finished")
    assert said >= 2 and "Each asks 1 GPU" in caplog.text
    for _ in range(10):  # units finish faster than the interval: silence
        w.progress()
        time.sleep(0.1)
    assert caplog.text.count("generate: 7 of 9 unit(s) not finished") <= said + 1
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_setup_on_a_set_up_node_installs_nothing(tmp_path):
    assert run_setup(tmp_path).returncode == 0
    done = installs(tmp_path)
    again = run_setup(tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout, again.stdout + again.stderr
    assert installs(tmp_path) == done


def test_installs_leave_one_faiss_and_the_tested_ray():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("faiss")], "FAISS is an extra: cpu or gpu"
    extras = project["optional-dependencies"]
    assert [d.split(">")[0] for d in extras["cpu"]] == ["faiss-cpu"]
    assert [d.split(">")[0] for d in extras["gpu"]] == ["faiss-gpu-cu12"]
    assert "EXTRAS ?= cpu,test" in (REPO / "Makefile").read_text()
    ray = next(d for d in project["dependencies"] if d.startswith("ray["))
    # 2.51: the first Ray whose Train V2 (checkpoint snapshot, start timeout) is on by default
    assert ">=2.51," in ray
