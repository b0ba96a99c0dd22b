"""The driver's memory in stage 3 of :func:`heatsearch.distributed.build_index` (assembling the
index from the workers' parts), side by side in one run (docs/DISTRIBUTED.md, "Measured"):

- ``streamed``: today's stage 3 (``distributed._assemble``): the rows copied part by part into a
  shard file, the whitening learned from float64 block sums, the descriptors written a block
  at a time, then :meth:`Index.save` (which links that shard);
- ``in-memory``: what stage 3 did before: every part's rows stacked into one ``(n, C)`` array
  on the driver, :meth:`Index._from_pooled` (the local path's whitening on all of them), then
  :meth:`Index.save`.

The parts are FAKED (no Ray, no network): ``N`` images of ``C`` = 1280 channels (EfficientNet-
Lite0's) in parts of 16 (``DEFAULT_BATCH_SIZE``), random non-negative rows, written as stage 2
writes them. Each mode runs in a fresh child process on its own copy of the parts and reports
its peak resident memory (``VmHWM``) and that peak less the child's resident memory before stage
3 (``stage3_rss_bytes``), its time, and ``/proc/loadavg``; the two indexes are then checked equal
(descriptors within 1e-6).

    python tools/distributed_stage3_memory.py [--images N] [--folder DIR]

Default N = 50,000 (256 MB of float32 pooled rows). The folder (default: a new temporary one)
is not removed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHANNELS = 1280
PART = 16

_CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from heatsearch import distributed
from heatsearch.app.index import Index, IndexConfig, mean_sample
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
mode, out, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
config = IndexConfig()
paths = json.loads((out.parent / "paths.json").read_text())
mean = np.load(out.parent / "mean.npy")
settings = distributed._Settings(config.to_dict(), "auto", 1, str(out / distributed.PARTS_DIR), None)
root = str(out.parent / "photos")
before = status("VmRSS")
t = time.perf_counter()
if mode == "streamed":
    index = distributed._assemble(paths, config, settings, mean, 256, [], None, root, "auto")
else:  # the previous stage 3: every row on the driver
    where, blocks = {}, []
    for file, ps, _ in distributed._part_lists(Path(settings.parts)):
        blocks.append(distributed._read_part(file)[1])
        where.update((p, (len(blocks) - 1, r)) for r, p in enumerate(ps))
    sample = mean_sample(paths, config.mean_sample)
    order = sample + [p for p in paths if p not in set(sample)]
    pooled = np.stack([blocks[where[p][0]][where[p][1]] for p in order])
    del blocks
    index = Index._from_pooled(config, order, pooled, mean=mean, mean_images=256, root=root)
    del pooled
index.save(out)
elapsed = time.perf_counter() - t
print(json.dumps({"mode": mode, "images": n, "channels": int(mean.shape[0]), "seconds": round(elapsed, 2),
                  "peak_rss_bytes": status("VmHWM"), "stage3_rss_bytes": status("VmHWM") - before,
                  "loadavg": open("/proc/loadavg").read().split()[:3]}))
"""


def fake(folder: Path, n: int) -> Path:
    """The parts stage 2 would leave for ``n`` images, in ``folder/template.index``."""
    from heatsearch import distributed

    rng = np.random.default_rng(0)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    paths = [str(folder / "photos" / f"img{i:07d}.jpg") for i in range(n)]
    out = folder / "template.index"
    parts = out / distributed.PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    for lo in range(0, n, PART):
        chunk = paths[lo : lo + PART]
        rows = np.abs(rng.standard_normal((len(chunk), CHANNELS), dtype=np.float32)) + 0.1
        distributed._write_part(parts / distributed._part_name(chunk), chunk, rows, [])
    (folder / "paths.json").write_text(json.dumps(paths))
    np.save(folder / "mean.npy", rng.random(CHANNELS).astype(np.float32))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="stage3-"))
    template = fake(folder, args.images)
    results = {}
    for mode in ("in-memory", "streamed"):
        out = folder / f"{mode}.index"
        shutil.copytree(template, out)
        done = subprocess.run([sys.executable, "-c", _CHILD, mode, str(out), str(args.images)],
                              capture_output=True, text=True, check=True, timeout=3600)
        line = done.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        results[mode] = out
    from heatsearch.app.index import Index

    a, b = (Index.load(results[m]) for m in ("in-memory", "streamed"))
    assert a.paths == b.paths
    gap = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for (_, x), (_, y)
              in zip(a._store.blocks("desc"), b._store.blocks("desc")))
    print(json.dumps({"same_paths": True, "max_descriptor_difference": gap}))


if __name__ == "__main__":
    main()
