"""Training checkpoints: folders step=NNNNNNNN under the experiment folder <run>/train/<name>.

A checkpoint holds model/ (save_pretrained, safetensors), optimizer.pt / scheduler.pt / scaler.pt (torch.save
of tensor-only state dicts, loaded with weights_only=True) and state.json (step, epoch, step in epoch, world
size, loss sums, elapsed time, the eval loss and the best checkpoint so far when the training evaluates, and a
manifest of the other files with their sizes, written last), so a checkpoint cut short by a crash is recognised
and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from typing import Any

from xqg.rundir import RunDir, filesystem_for

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
KEEP_CHECKPOINTS = 2


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint at a global step."""
    return f"step={step:08d}"


def _manifest(root: str) -> dict[str, int]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root).replace(os.sep, "/")] = os.path.getsize(p)
    return out


def write_state(ckpt_dir: str, state: dict[str, Any]) -> None:
    """state.json with a manifest of every other file of the checkpoint (written last)."""
    state = {**state, "files": _manifest(ckpt_dir)}
    with open(os.path.join(ckpt_dir, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, sort_keys=True)


def read_valid_state(experiment_uri: str, name: str) -> dict[str, Any] | None:
    """state.json of a checkpoint folder when every file of its manifest is there with its size, else None."""
    import pyarrow.fs as pafs

    fs, root = filesystem_for(experiment_uri)
    base = posixpath.join(root, name)
    try:
        with fs.open_input_stream(posixpath.join(base, STATE_FILE)) as f:
            state = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    files = state.get("files") or {}
    infos = fs.get_file_info([posixpath.join(base, rel) for rel in files])
    for info, size in zip(infos, files.values()):
        if info.type != pafs.FileType.File or info.size != size:
            return None
    return state


def checkpoint_names(experiment_uri: str) -> list[str]:
    """step=* folders of an experiment, oldest first."""
    return [n for n in RunDir(experiment_uri).listdir() if n.startswith("step=")]


def latest_checkpoint(experiment_uri: str) -> tuple[str, dict[str, Any]] | None:
    """(folder name, state) of the newest complete checkpoint of an experiment."""
    for name in reversed(checkpoint_names(experiment_uri)):
        state = read_valid_state(experiment_uri, name)
        if state is not None:
            return name, state
    return None


def prune_checkpoints(experiment_uri: str, keep: int, keep_also: str | None = None) -> None:
    """Keep the newest `keep` checkpoint folders and `keep_also` (the best one by eval loss); Ray prunes only those
    it registered; a checkpoint written just before a driver was killed is not."""
    exp = RunDir(experiment_uri)
    for name in checkpoint_names(experiment_uri)[:-keep]:
        if name != keep_also:
            exp.remove(name)


def clean_experiment(experiment_uri: str) -> None:
    """Before a (re)run: drop incomplete checkpoint folders and a Ray snapshot that is unreadable or stale.

    A driver killed while writing either would otherwise stop the rerun (Ray refuses a snapshot that names
    missing checkpoints); complete checkpoints are always found again by the step=* scan.
    """
    exp = RunDir(experiment_uri)
    for name in checkpoint_names(experiment_uri):
        if read_valid_state(experiment_uri, name) is None:
            log.warning("removing incomplete checkpoint %s", exp.path(name))
            exp.remove(name)
    if not exp.exists(SNAPSHOT_FILE):
        return
    try:
        snap = exp.read_json(SNAPSHOT_FILE)
        names = [r["checkpoint_dir_name"] for r in snap.get("checkpoint_results", [])]
        if snap.get("latest_checkpoint_result"):
            names.append(snap["latest_checkpoint_result"]["checkpoint_dir_name"])
        ok = all(exp.exists(n) for n in names)
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        log.warning("removing unusable Ray Train snapshot %s", exp.path(SNAPSHOT_FILE))
        exp.remove(SNAPSHOT_FILE)
