"""Device and pool decisions (xqg/units.py) on the session's local Ray (2 CPUs, no GPU)."""

from __future__ import annotations

import logging
import warnings

import pytest

from xqg.units import FAKE_GPU_ENV, Pool, actor_device, failed_manifest, make_pool, resolve_use_gpu


def test_use_gpu_auto_follows_the_cluster_true_is_kept_and_says_it_waits(ray_local, caplog):
    assert resolve_use_gpu("auto", "generate") is False and resolve_use_gpu(None, "generate") is False
    assert resolve_use_gpu(False, "encode") is False
    with caplog.at_level(logging.WARNING, logger="xqg.units"):
        assert resolve_use_gpu(True, "encode") is True  # no CPU fallback, though the cluster has no GPU
    assert "encode: use_gpu is true and this Ray cluster has no GPU yet" in caplog.text


def test_gpu_pools_ask_for_one_actor_per_unit_or_the_configured_most_cpu_pools_per_cpu(ray_local):
    assert make_pool(True, None, 7, "generate") == Pool(True, 7, "generate")
    assert make_pool(True, 2, 7, "generate").size == 2
    assert make_pool(True, 9, 3, "generate").size == 3
    assert make_pool("auto", None, 7, "encode") == Pool(False, 1, "encode")  # 2 CPUs: one actor, one for the driver
    gpu = Pool(True, 4).map_batches_args()
    assert gpu["num_gpus"] == 1 and "num_cpus" not in gpu
    compute = gpu["compute"]
    assert (compute.min_size, compute.max_size, compute.initial_size) == (1, 4, 4)
    assert compute.max_tasks_in_flight_per_actor == 1
    assert Pool(False, 1).map_batches_args()["num_cpus"] == 1


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
    monkeypatch.delenv(FAKE_GPU_ENV, raising=False)
    with pytest.raises(RuntimeError, match="refusing to compute on the CPU"):
        actor_device(True)
    monkeypatch.setenv(FAKE_GPU_ENV, "1")  # a fake GPU only counts where Ray gave this process one
    with pytest.raises(RuntimeError, match="refusing to compute on the CPU"):
        actor_device(True)


def test_a_failed_manifest_keeps_the_columns_zeroes_the_counts_and_names_the_reason():
    try:
        raise OSError("truncated parquet file")
    except OSError as e:
        row = failed_manifest("lang=sw/shard=00001", e, {"unit": "", "lang": "sw", "rows_in": 3, "seconds": 1.5, "error": ""})
    assert row["unit"] == "lang=sw/shard=00001" and row["lang"] == "sw" and row["rows_in"] == 0 and row["seconds"] == 0.0
    assert row["error"].startswith("OSError: truncated parquet file (at test_units.py:")
