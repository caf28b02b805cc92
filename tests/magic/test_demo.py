"""`make demo`'s script: the quickstart notebook run headless, its plan and best configuration printed."""

import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_quickstart_and_prints_its_plan_and_best(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HBMAGIC_DIR": str(tmp_path), "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Hyperband: R=27, r=1, eta=3" in out.split("The plan (%hyperband plan):")[1]
    best = out.split("The best configuration found:\n")[1].splitlines()[0]
    assert best.startswith("val_error=") and "(trial " in best and "lr=" in best
    assert "WARNING" not in done.stderr + out  # the kernel talks over Unix sockets: no warning about TCP
    executed = nbformat.read(tmp_path / "executed-01-quickstart.ipynb", as_version=4)
    assert all(cell.get("outputs") is not None for cell in executed.cells if cell.cell_type == "code")
    assert not [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
