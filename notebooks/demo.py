"""`make demo`: run the quickstart notebook headless in a real kernel, then print its plan and best configuration.

The notebook is executed as a user would run it (every cell, in order, in a
fresh kernel); the outputs of the cells tagged ``plan`` and ``best`` are
printed. The executed notebook is written next to the study journals
(``$HBMAGIC_DIR``) so it can be opened afterwards.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "01-quickstart.ipynb"


def text_of(cell: nbformat.NotebookNode) -> str:
    """The text a reader sees under ``cell``: streams and plain-text displays."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output and "text/plain" in output.data:
            parts.append(output.data["text/plain"] + "\n")
    return "".join(parts).rstrip()


def tagged(notebook: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    return next(cell for cell in notebook.cells if tag in cell.metadata.get("tags", []))


def main() -> int:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    print(f"running {NOTEBOOK.name} in a fresh kernel ...", flush=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hbmagic-demo-") as scratch:
        # Unix sockets, not TCP: the kernel listens on no port at all.
        manager = KernelManager(
            kernel_name="python3",
            transport="ipc",
            ip=os.path.join(scratch, "kernel"),
            connection_file=os.path.join(scratch, "kernel.json"),
        )
        client = NotebookClient(notebook, km=manager, timeout=600, resources={"metadata": {"path": str(HERE)}})
        try:
            client.execute()
        finally:
            if manager.has_kernel:
                manager.shutdown_kernel()
    seconds = time.perf_counter() - began
    print(f"\nThe plan (%hyperband plan):\n{text_of(tagged(notebook, 'plan'))}")
    print(f"\nThe best configuration found:\n{text_of(tagged(notebook, 'best'))}")
    folder = Path(os.environ.get("HBMAGIC_DIR") or HERE / ".hbmagic")
    folder.mkdir(parents=True, exist_ok=True)
    executed = folder / f"executed-{NOTEBOOK.name}"
    nbformat.write(notebook, executed)
    print(f"\nran in {seconds:.1f} s; the executed notebook: {executed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
