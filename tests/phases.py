"""Run the test phases in order, each with a fresh HBMAGIC_DIR, and say how long each took."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

PHASES: list[tuple[str, list[list[str]]]] = [
    ("lint", [[str(BIN / "ruff"), "format", "--check", "."], [str(BIN / "ruff"), "check", "."]]),
    ("unit", [[sys.executable, "-m", "pytest", "-q", "tests/unit"]]),
    ("magic", [[sys.executable, "-m", "pytest", "-q", "tests/magic"]]),
    ("executors", [[sys.executable, "-m", "pytest", "-q", "tests/executors"]]),
    ("notebooks", [[sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:randomly", "notebooks"]]),
    ("browser", [[sys.executable, "-m", "pytest", "-q", "tests/browser"]]),
]


def main() -> int:
    wanted = set(sys.argv[1:])
    times: list[tuple[str, float, str]] = []
    failed = False
    for name, commands in PHASES:
        if wanted and name not in wanted:
            continue
        print(f"\n=== phase {name} ===", flush=True)
        began = time.perf_counter()
        status = "ok"
        with tempfile.TemporaryDirectory(prefix=f"hbmagic-{name}-") as folder:
            env = dict(os.environ, HBMAGIC_DIR=folder)
            for command in commands:
                if subprocess.call(command, cwd=ROOT, env=env) != 0:
                    status, failed = "FAILED", True
                    break
        times.append((name, time.perf_counter() - began, status))
    print("\nphase       seconds  status")
    for name, seconds, status in times:
        print(f"{name:<10} {seconds:8.1f}  {status}")
    print(f"{'total':<10} {sum(t for _, t, _ in times):8.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
