"""What the data platform's demo datasets (demo/datasets.py) add to `civicgrid demo load`: the
full `load_demo` into a fresh SQLite file with the datasets and, as the baseline in the same
process, with the datasets step replaced by a no-op; alternating runs, medians and the ratio.
Writes its section into docs/benchmarks.md.

    .venv/bin/python bench/demo_datasets.py [--grids 600] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

WORK = Path(tempfile.mkdtemp(prefix="cg-bench-demo-data-"))
os.environ.setdefault("CIVICGRID_DATA_DIR", str(WORK / "data"))  # the data engine's folder

from bench._common import ROOT, machine_info, median, write_section  # noqa: E402

from civicgrid.core.db import Database  # noqa: E402
from civicgrid.core.migrate import upgrade  # noqa: E402
from civicgrid.demo import datasets  # noqa: E402
from civicgrid.demo import service as demo  # noqa: E402
from civicgrid.models import load_all  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"


def one_run(run: int, grids: int, with_datasets: bool) -> tuple[float, float]:
    """Seconds for load_demo (incl. commit) and for the datasets step inside it."""
    folder = WORK / f"run-{run}-{int(with_datasets)}"
    folder.mkdir(parents=True)
    url = f"sqlite:///{folder / 'civicgrid.db'}"
    upgrade(url)
    db = Database(url)
    real = datasets.load
    spent = [0.0]

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs) if with_datasets else {}
        finally:
            spent[0] = time.perf_counter() - start

    datasets.load = timed  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        with db.session() as session:
            demo.load_demo(session, grids=grids, seed=2021, data_dir=folder)
        total = time.perf_counter() - start
    finally:
        datasets.load = real  # type: ignore[assignment]
        db.dispose()
        shutil.rmtree(Path(os.environ["CIVICGRID_DATA_DIR"]) / "datasets", ignore_errors=True)
    return total, spent[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grids", type=int, default=600)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    load_all()
    before = machine_info(duckdb=True)
    with_, without, step = [], [], []
    for run in range(args.runs):
        total, part = one_run(run, args.grids, True)
        with_.append(total)
        step.append(part)
        without.append(one_run(run, args.grids, False)[0])
        print(
            f"run {run + 1}: with {total:.2f} s (datasets {part:.2f} s), without {without[-1]:.2f} s",
            flush=True,
        )
    text = "\n".join(
        [
            "## Demo datasets in `civicgrid demo load` (bench/demo_datasets.py)",
            "",
            f"Machine: {before}. After: load average {machine_info().rsplit('load average', 1)[1].strip()}.",
            f"`load_demo(grids={args.grids})` into a fresh SQLite file, {args.runs} alternating runs each.",
            "",
            "| | median |",
            "|---|---|",
            f"| `load_demo` without the datasets step (baseline, same process) | {median(without):.2f} s |",
            f"| `load_demo` with the datasets step | {median(with_):.2f} s |",
            "| of which the datasets step (4 datasets, 5 loads through ingestion, grants, key) "
            f"| {median(step):.2f} s |",
            f"| ratio with / without | {median(with_) / median(without):.2f}× |",
        ]
    )
    print(text)
    write_section(DOC, "demo-datasets", text, title="# Benchmarks: data platform pages and demo datasets\n\n")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
