"""Time of ``%load_ext hbmagic`` in a fresh process.

Each run starts a new Python process, creates an IPython shell (not timed),
then times ``%load_ext hbmagic``: importing hbmagic and registering the magics,
from a cold start of hbmagic's modules. It also checks that nothing heavy
(torch, dask, pandas, matplotlib) was imported. The median of the runs is
written under the "Magic" heading of benchmarks/RESULTS.md.

Target: at most 300 ms (median).

Run: .venv/bin/python benchmarks/load_ext.py [RUNS]
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
TARGET_MS = 300
HEAVY = ("torch", "dask", "distributed", "pandas", "matplotlib")

PROBE = f"""
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
began = time.perf_counter()
shell.run_line_magic("load_ext", "hbmagic")
seconds = time.perf_counter() - began
registered = "hyperband" in shell.magics_manager.magics["cell"]
print(json.dumps([seconds, registered, sorted(m for m in {HEAVY!r} if m in sys.modules)]))
"""


def one_run() -> float:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    seconds, registered, heavy = json.loads(out.strip().splitlines()[-1])
    if not registered or heavy:
        raise SystemExit(f"%load_ext hbmagic: registered={registered}, heavy modules imported: {heavy}")
    return seconds


def write_results(text: str) -> None:
    """Replace the "## Magic" section of RESULTS.md (or add it), leaving the other sections as they are."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = f"## Magic\n\n{text}\n"
    pattern = re.compile(r"^## Magic\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: section + "\n", current).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + section
    RESULTS.write_text(updated)


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    one_run()  # warm the file system cache and the bytecode cache
    times = [one_run() * 1e3 for _ in range(runs)]
    median = statistics.median(times)
    verdict = "meets" if median <= TARGET_MS else "MISSES"
    print(f"%load_ext hbmagic, fresh process, {runs} runs")
    print(f"  median {median:.0f} ms, min {min(times):.0f} ms, max {max(times):.0f} ms ({verdict} <= {TARGET_MS} ms)")
    write_results(
        f"`%load_ext hbmagic` in a fresh process (`{Path(sys.argv[0]).as_posix()}`, {runs} runs, "
        f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, {platform.machine()}):\n\n"
        f"| median | min | max | target |\n|---|---|---|---|\n"
        f"| {median:.0f} ms | {min(times):.0f} ms | {max(times):.0f} ms | <= {TARGET_MS} ms ({verdict}) |\n\n"
        f"Nothing heavy is imported by it ({', '.join(HEAVY)} checked)."
    )
    return 0 if median <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
