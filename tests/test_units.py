"""Device and pool decisions (xqg/units.py) on the session's local Ray (2 CPUs, no GPU)."""

from __future__ import annotations

import logging
import warnings

import pytest

import xqg.units
from tests.hooks.xqg_test_hooks import fake_gpu
from xqg.units import Pool, actor_device, failed_manifest, make_pool, resolve_use_gpu


def test_use_gpu_auto_follows_the_cluster_true_is_kept_and_says_it_waits(ray_local, caplog):
    assert resolve_use_gpu("auto", "generate") is False and resolve_use_gpu(None, "generate") is False
    assert resolve_use_gpu(False, "encode") is False
    with caplog.at_level(logging.WARNING, logger="xqg.units"):
        assert resolve_use_gpu(True, "encode") is True  # no CPU fallback, though the cluster has no GPU
    assert "encode: use_gpu is true and this Ray cluster has no GPU yet" in caplog.text


def test_pools_start_at_their_minimum_and_are_bounded_by_config_and_cluster_never_by_the_unit_count(
    ray_local, monkeypatch, caplog
):
    import xqg.units as units
    from xqg.config import ConfigError, EncodeConfig, GenerateConfig, load_config

    # The session's local Ray: 2 CPUs, no GPU, no autoscaler.
    assert make_pool(True, GenerateConfig(), 14_336, "generate") == Pool(True, 1, "generate", 1)  # its request brings a node
    assert make_pool("auto", EncodeConfig(), 7, "encode") == Pool(False, 1, "encode", 1)  # 2 CPUs: one for the driver
    assert make_pool(True, GenerateConfig(max_actors=9), 3, "generate").size == 3  # no more actors than units
    # An autoscaler whose node types hold at most 16 GPUs and 64 CPUs (cluster.yaml's max_workers: 16).
    capacity = {"GPU": 16, "CPU": 64}
    monkeypatch.setattr(units, "cluster_capacity", lambda r: (capacity[r], "the autoscaler's node types"))
    assert units.pool_bounds(1, None, True, 14_336)[:2] == (1, 16)
    assert units.pool_bounds(1, None, False, 14_336)[:2] == (1, 64)
    assert units.pool_bounds(4, 32, True, 14_336)[:2] == (4, 16)  # 32 configured: the cluster can never hold them
    assert units.pool_bounds(20, None, True, 14_336)[:2] == (16, 16)
    with caplog.at_level(logging.INFO, logger="xqg.units"):
        pool = make_pool(True, GenerateConfig(min_actors=2, concurrency=8), 14_336, "generate")
    assert pool == Pool(True, 8, "generate", 2)
    assert "generate: pool of 2-8 GPU actor(s)" in caplog.text  # the planning line says the bounds
    compute = pool.map_batches_args()["compute"]
    # every actor asked for at once (the autoscaler's demand), shrinking to its minimum when idle
    assert (compute.min_size, compute.max_size, compute.initial_size) == (2, 8, 8)
    assert compute.max_tasks_in_flight_per_actor == 1
    gpu = Pool(True, 4).map_batches_args()
    assert gpu["num_gpus"] == 1 and "num_cpus" not in gpu
    assert Pool(False, 1).map_batches_args()["num_cpus"] == 1
    # The config: concurrency is max_actors' old name; min above max and unknown keys are errors.
    assert load_config(None, ["encode.concurrency=3"]).encode.max_actors == 3
    with pytest.raises(ConfigError, match="min_actors"):
        load_config(None, ["generate.min_actors=4", "generate.max_actors=2"])
    with pytest.raises(ConfigError):
        load_config(None, ["generate.max_actor=2"])


def test_an_autoscaler_config_bounds_a_resource_by_its_node_types_within_the_clusters_max_workers():
    from xqg.units import autoscaler_capacity

    config = {"max_workers": 3, "head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "gpu": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 2},
        "cpu": {"resources": {"CPU": 16}, "min_workers": 0, "max_workers": 8},
    }}
    assert autoscaler_capacity(config, "GPU") == 2
    assert autoscaler_capacity(config, "CPU") == 16 * 3  # three nodes at most: the richest type first
    assert autoscaler_capacity({**config, "max_workers": 16}, "CPU") == 8 * 2 + 16 * 8
    assert autoscaler_capacity({}, "GPU") == 0


def test_cluster_capacity_is_what_the_local_cluster_holds(ray_local):
    from xqg.units import cluster_capacity

    assert cluster_capacity("CPU") == (2, "the cluster now") and cluster_capacity("GPU") == (0, "the cluster now")


def test_pool_arguments_are_not_deprecated_in_ray_data(ray_local):
    import ray
    from ray.util.annotations import RayDeprecationWarning

    class Double:  # defined here: Ray ships it to the workers by value
        """A callable class like the stages' actors."""

        def __call__(self, batch):
            return {"x": batch["x"] * 2}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ray.data.from_items([{"x": 1}, {"x": 2}]).map_batches(Double, batch_size=1, **Pool(False, 1).map_batches_args())
        assert sorted(r["x"] for r in ds.iter_rows()) == [2, 4]
    deprecated = [str(w.message) for w in caught if issubclass(w.category, RayDeprecationWarning)]
    assert not deprecated, deprecated


def test_a_cpu_actor_never_takes_cuda_and_a_gpu_actor_without_cuda_refuses(ray_local, monkeypatch):
    assert actor_device(False) == "cpu"
    with pytest.raises(RuntimeError, match="refusing to compute on the CPU"):
        actor_device(True)
    monkeypatch.setattr(xqg.units, "actor_device", actor_device)  # restored after the test hook below
    fake_gpu(xqg.units)  # the test clusters' fake GPU only counts where Ray gave this process one
    with pytest.raises(RuntimeError, match="refusing to compute on the CPU"):
        xqg.units.actor_device(True)


def test_a_failed_manifest_keeps_the_columns_zeroes_the_counts_and_names_the_reason():
    try:
        raise OSError("truncated parquet file")
    except OSError as e:
        row = failed_manifest("lang=sw/shard=00001", e, {"unit": "", "lang": "sw", "rows_in": 3, "seconds": 1.5, "error": ""})
    assert row["unit"] == "lang=sw/shard=00001" and row["lang"] == "sw" and row["rows_in"] == 0 and row["seconds"] == 0.0
    assert row["error"].startswith("OSError: truncated parquet file (at test_units.py:")
