"""Turn a pytest-benchmark JSON file into the README's tables.

    python -m pytest benches --benchmark-only --benchmark-json bench.json
    python tools/bench_report.py bench.json

For every group: the median of each implementation, the speed-up of the Rust path over the
reference (or over NumPy), and where a benchmark declares its flops, the effective GFLOP/s
and its fraction of NumPy's float32 matmul measured in the same run.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    groups = defaultdict(dict)
    matmul = []
    for b in data["benchmarks"]:
        impl = (b["params"] or {}).get("impl", b["name"].split("[")[0])
        groups[b["group"]][impl] = b
        if b["group"] == "numpy float32 matmul":
            matmul.append(b["extra_info"]["flops"] / b["stats"]["median"] / 1e9)
    peak = max(matmul) if matmul else None
    machine = data["machine_info"]
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, {machine.get('cpu', {}).get('count', '?')} logical CPUs, "
          f"Python {machine.get('python_version')}; {data['datetime'][:10]}")
    if peak:
        print(f"NumPy float32 matmul: {peak:.0f} GFLOP/s (best of the sizes measured)")
    print()
    print("| benchmark | heatsearch (Rust) | reference / NumPy / 1 thread | speed-up | effective GFLOP/s (% of NumPy matmul) |")
    print("|---|---|---|---|---|")
    for name, impls in groups.items():
        if name == "numpy float32 matmul":
            continue
        fast = impls.get("rust")
        slow = impls.get("reference") or impls.get("numpy") or impls.get("1 thread")
        if fast is None:
            continue
        tf = fast["stats"]["median"]
        row = f"| {name} | {tf * 1e3:.2f} ms |"
        row += f" {slow['stats']['median'] * 1e3:.2f} ms | {slow['stats']['median'] / tf:.1f}x |" if slow else " | |"
        flops = fast["extra_info"].get("flops")
        if flops and peak:
            g = flops / tf / 1e9
            row += f" {g:.0f} ({100 * g / peak:.0f}%) |"
        else:
            row += " |"
        print(row)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
