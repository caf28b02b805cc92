"""A real JupyterLab on 127.0.0.1, for the browser tests and the widget benchmark.

It gets a free port and its own settings, workspaces and study folders under a
base folder; its settings turn the news popup off so nothing covers a page.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CHROMIUM", "running_lab"]

CHROMIUM = os.environ.get("HBMAGIC_CHROMIUM", "/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quiet_settings(folder: Path) -> None:
    """No news popup, no update check: nothing covers the page."""
    target = folder / "@jupyterlab" / "apputils-extension"
    target.mkdir(parents=True)
    (target / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


@contextmanager
def running_lab(base: Path, start_timeout: float = 90) -> Iterator[tuple[str, Path]]:
    """Start JupyterLab serving ``base/root``; yields (url, root) and stops it afterwards.

    Raises:
        RuntimeError: It did not start; the message holds the end of its log.
    """
    root, settings, workspaces, studies = (base / n for n in ("root", "settings", "workspaces", "studies"))
    for folder in (root, workspaces, studies):
        folder.mkdir(parents=True, exist_ok=True)
    _quiet_settings(settings)
    port = _free_port()
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(workspaces),
        HBMAGIC_DIR=str(studies),
    )
    log_path = base / "lab.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below, after the server stops
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.allow_root=True",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.expose_app_in_browser=True",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError("JupyterLab did not start:\n" + log_path.read_text()[-4000:]) from None
                time.sleep(0.3)
        yield url, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
