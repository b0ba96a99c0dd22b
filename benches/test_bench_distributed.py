"""Indexing speed on a Ray cluster (heatsearch.distributed) against the local path, in one run.

    python -m pytest benches/test_bench_distributed.py --benchmark-only -s

The real photographs of ``smvs_paintings`` (``$HEATSEARCH_SHARED_DATA``, Query and Reference:
182 images of 640 x 480; skipped without the data or Ray) with the default configuration
(EfficientNet-Lite0 on ONNX Runtime, three scales, HeW, learned whitening):

- ``local``: :meth:`Index.build` (ONNX Runtime on all the CPUs, decoding overlapped);
- ``ray-1`` / ``ray-2``: :func:`heatsearch.distributed.build_index`'s stages on a new local
  cluster of 2 CPUs with 1 and 2 workers (one ONNX thread each), timed one by one: the cluster's
  start, stage 1 (the HeW mean: every image here, as the collection is smaller than the mean
  sample of 256), stage 2 (decode, extract, pool, write parts), stage 3 (assemble, whiten, save).

One round each (minutes on 2 cores). ``extra_info``: images/s end to end and of stage 2 (the
rate that matters on a large collection, where stage 1's 256 images are a rounding error), the
stage times and ``/proc/loadavg`` before and after: the machine is shared, say when it was busy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
ray = pytest.importorskip("ray", reason="needs Ray Data: pip install 'heatsearch[ray]'")

from heatsearch import distributed  # noqa: E402
from heatsearch.app.index import Index, IndexConfig, find_images  # noqa: E402


def _data() -> Path:
    env = os.environ.get("HEATSEARCH_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    folder = root / "smvs_paintings"
    if not folder.is_dir():
        pytest.skip(f"real evaluation data not found at {folder} (set HEATSEARCH_SHARED_DATA)")
    return folder


def _load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().strip()


def _ray_build(paths, folder, out, workers):
    config = IndexConfig()
    settings = distributed._Settings(config.to_dict(), "auto", 1, str(out / distributed.PARTS_DIR), None)
    times = {}
    t = time.perf_counter()
    with distributed._cluster(ray, None, 2, False):
        times["cluster_start_s"] = time.perf_counter() - t
        t = time.perf_counter()
        distributed._write_parts(ray, paths, config, settings, workers, distributed.DEFAULT_BATCH_SIZE, limit=0)
        times["stage1_mean_s"] = time.perf_counter() - t
        t = time.perf_counter()
        mean, mean_images, sample_skipped = distributed._write_parts(
            ray, paths, config, settings, workers, distributed.DEFAULT_BATCH_SIZE)
        times["stage2_extract_s"] = time.perf_counter() - t
    t = time.perf_counter()
    index = distributed._assemble(paths, config, settings, mean, mean_images, sample_skipped, None, str(folder), "auto")
    index.save(out)
    times["stage3_assemble_save_s"] = time.perf_counter() - t
    return index, times


@pytest.mark.parametrize("case", ["local", "ray-1", "ray-2"])
def test_index_smvs(benchmark, case, tmp_path):
    folder = _data()
    paths = find_images(folder)
    info = benchmark.extra_info
    info["images"] = len(paths)
    info["loadavg_before"] = _load()
    result = {}

    def run():
        out = tmp_path / f"{case}-{time.monotonic_ns()}.index"
        if case == "local":
            index = Index.build(folder)
            index.save(out)
            result["times"] = {}
        else:
            index, result["times"] = _ray_build(paths, folder, out, int(case.split("-")[1]))
        result["n"] = len(index)

    t = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    total = time.perf_counter() - t
    info["loadavg_after"] = _load()
    info.update({k: round(v, 2) for k, v in result["times"].items()})
    info["total_s"] = round(total, 2)
    info["images_per_s"] = round(len(paths) / total, 2)
    if "stage2_extract_s" in result["times"]:
        info["stage2_images_per_s"] = round(len(paths) / result["times"]["stage2_extract_s"], 2)
    assert result["n"] == len(paths)
    print(case, info)
