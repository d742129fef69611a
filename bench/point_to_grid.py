"""Benchmark: point → grid lookup over 10,000 grids (run: .venv/bin/python bench/point_to_grid.py).

Builds a tiling of 10,000 grids (Voronoi cells of seeded random points clipped to a box about
the size of a county), indexes it with the same `GridIndex` that `grid_for_point` uses, and
times 1,000,000 random points. Prints a Markdown section for docs/benchmarks-regions.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import shapely
from shapely.geometry import box

from civicgrid.regions.geometry import NOT_FOUND, GridIndex

BOX = (121.0, 28.4, 121.6, 28.9)  # ~60 km × 55 km near Taizhou


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tiling(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = box(*BOX)
    seeds = shapely.points(rng.uniform(BOX[0], BOX[2], n), rng.uniform(BOX[1], BOX[3], n))
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=frame))
    return np.asarray(shapely.intersection(cells, frame))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grids", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--single", type=int, default=100_000, help="points timed one call at a time")
    ap.add_argument("--brute", type=int, default=200, help="points for the brute-force baseline")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args()

    t0 = time.perf_counter()
    cells = tiling(args.grids, args.seed)
    t_tile = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = GridIndex.build([(i + 1, f"331002001{i:06d}", g) for i, g in enumerate(cells)])
    t_index = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed + 1)
    lons = rng.uniform(BOX[0], BOX[2], args.points)
    lats = rng.uniform(BOX[1], BOX[3], args.points)

    bulk_runs = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        found = index.positions(lons, lats)
        bulk_runs.append((time.perf_counter() - t0) / args.points * 1e6)
    assert (found != NOT_FOUND).all(), "the tiling covers the box: every point has a grid"

    single_runs = []
    sample_x, sample_y = lons[: args.single].tolist(), lats[: args.single].tolist()
    for _ in range(args.runs):
        t0 = time.perf_counter()
        for x, y in zip(sample_x, sample_y, strict=True):
            index.position(x, y)
        single_runs.append((time.perf_counter() - t0) / args.single * 1e6)

    # Brute force: test every polygon for each point (what one would write without an index).
    brute_runs = []
    for _ in range(max(1, args.runs // 2)):
        t0 = time.perf_counter()
        for x, y in zip(sample_x[: args.brute], sample_y[: args.brute], strict=True):
            hits = np.flatnonzero(shapely.intersects_xy(index.polygons, x, y))
            assert hits.size and hits[0] == found[sample_x.index(x)]
        brute_runs.append((time.perf_counter() - t0) / args.brute * 1e6)

    bulk, single, brute = (statistics.median(r) for r in (bulk_runs, single_runs, brute_runs))
    verdict = "meets" if max(bulk, single) <= 20 else "misses"
    print("## Point → grid lookup (bench/point_to_grid.py)\n")
    print(
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
        f"shapely {shapely.__version__} (GEOS {shapely.geos_version_string}), numpy {np.__version__}"
    )
    print(
        f"- Data: {len(index):,} grids (Voronoi cells of seeded random points clipped to a "
        f"{BOX[2] - BOX[0]:.1f}° × {BOX[3] - BOX[1]:.1f}° box), seed {args.seed}; tiling built in "
        f"{t_tile:.2f} s, index built in {t_index:.2f} s"
    )
    print(f"- Points: {args.points:,} uniform random points in the box; median of {args.runs} runs\n")
    print("| path | points | median µs / lookup | runs (µs) | vs brute force |")
    print("|---|---:|---:|---|---:|")
    fmt = ", ".join
    print(
        f"| vectorised `GridIndex.positions` (`grids_for_points`) | {args.points:,} | {bulk:.2f} | "
        f"{fmt(f'{r:.2f}' for r in bulk_runs)} | {brute / bulk:,.0f}× faster |"
    )
    print(
        f"| single call `GridIndex.position` (`grid_for_point`'s index path) | {args.single:,} | "
        f"{single:.2f} | {fmt(f'{r:.2f}' for r in single_runs)} | {brute / single:,.0f}× faster |"
    )
    print(
        f"| brute force: `intersects_xy` against all {len(index):,} polygons | {args.brute:,} | "
        f"{brute:.0f} | {fmt(f'{r:.0f}' for r in brute_runs)} | 1× |"
    )
    print(
        f"\nGoal ≤ 20 µs per lookup: {verdict} it. The single-call figure excludes the database "
        "round trip that `grid_for_point` adds to load the grid row and its ancestors."
    )


if __name__ == "__main__":
    main()
