"""The magic in a real Jupyter kernel: display updates in place, interrupt, resume, and resume after a restart."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

TIMEOUT = 120


class Kernel:
    """A real ipykernel, driven through jupyter_client; each ``run`` returns the IOPub messages of one cell."""

    def __init__(self, folder: Path):
        env = dict(os.environ, HBMAGIC_DIR=str(folder / "studies"), PYTHONUNBUFFERED="1")
        self.manager = KernelManager(kernel_name="python3")
        self.manager.kernel_spec.argv[0] = sys.executable  # this environment's Python
        self.manager.start_kernel(cwd=str(folder), env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=TIMEOUT)

    def send(self, code: str) -> str:
        return self.client.execute(code)

    def collect(self, msg_id: str, timeout: float = TIMEOUT) -> list[tuple[str, dict]]:
        """IOPub messages of the cell ``msg_id`` until the kernel is idle again."""
        messages = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                return messages
            messages.append((kind, content))

    def run(self, code: str, timeout: float = TIMEOUT) -> list[tuple[str, dict]]:
        return self.collect(self.send(code), timeout)

    def restart(self) -> None:
        self.manager.restart_kernel(now=True)
        self.client.wait_for_ready(timeout=TIMEOUT)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def stdout(messages) -> str:
    return "".join(c["text"] for kind, c in messages if kind == "stream" and c["name"] == "stdout")


def errors(messages) -> list[dict]:
    return [c for kind, c in messages if kind == "error"]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    kernel = Kernel(tmp_path_factory.mktemp("kernel"))
    kernel.run("%load_ext hbmagic")
    yield kernel
    kernel.close()


def test_load_ext_in_a_kernel_imports_nothing_heavy(kernel):
    messages = kernel.run(
        "%reload_ext hbmagic\nimport sys\n"
        "print(sorted(m for m in ('torch', 'dask', 'distributed', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    assert errors(messages) == []
    assert stdout(messages).strip() == "[]"


def test_text_progress_is_one_display_updated_in_place(kernel):
    cell = textwrap.dedent(
        """\
        %%hyperband --max-budget 27 --seed 1 --no-widget -o search
        #| x: uniform(0, 1)
        import time
        print("this goes to the trial, not the cell")
        for epoch in range(trial.start, budget):
            time.sleep(0.004)
            report(loss=(x - 0.3) ** 2 + 1 / (epoch + 1))
        """
    )
    messages = kernel.run(cell)
    assert errors(messages) == []
    shown = [c for kind, c in messages if kind == "display_data"]
    updates = [c for kind, c in messages if kind == "update_display_data"]
    assert len(shown) == 1
    display_id = shown[0]["transient"]["display_id"]
    assert len(updates) >= 3
    assert {u["transient"]["display_id"] for u in updates} == {display_id}
    assert updates[-1]["data"]["text/plain"].startswith("hyperband completed · 69/69 evaluations")
    assert len(updates) < 69 * 2  # throttled, not one per report
    out = stdout(messages)
    assert out.startswith("new study x-")
    assert "this goes to the trial" not in out
    assert out.rstrip().splitlines()[-1].startswith("best (minimized loss): loss=")
    check = kernel.run("print(search.reason.value, search.evaluations, 'this goes' in search.trials[0].output)")
    assert stdout(check).split() == ["completed", "69", "True"]


def test_in_a_kernel_the_search_shows_the_widget_by_default(kernel):
    messages = kernel.run("%%hyperband --max-budget 9 --seed 3\n#| x: uniform(0, 1)\nreport(x)\n")
    assert errors(messages) == []
    outputs = [(kind, c) for kind, c in messages if kind in ("stream", "display_data")]
    assert outputs[0][0] == "stream"
    assert outputs[0][1]["text"].startswith("new study x-")  # the first output line, above the widget
    shown = [c for kind, c in outputs if kind == "display_data"]
    assert len(shown) == 1
    assert {"application/vnd.jupyter.widget-view+json", "text/plain"} <= set(shown[0]["data"])
    assert stdout(messages).rstrip().splitlines()[-1].startswith("best (minimized value): value=")


def test_interrupt_then_resume_in_the_same_kernel_and_after_a_restart(kernel, tmp_path):
    log = tmp_path / "evaluations.log"
    cell = textwrap.dedent(
        f"""\
        %%hyperband --max-budget 9 --seed 2 --no-widget -o search
        #| lr: loguniform(1e-3, 1e-1)
        import time
        with open({str(log)!r}, "a") as f:
            f.write(f"{{trial.id}} {{trial.rung}} {{trial.start}}\\n")
        st = trial.state
        if not st:
            st["epochs"] = 0
        for epoch in range(trial.start, budget):
            time.sleep(0.05)
            st["epochs"] += 1
            report(loss=abs(lr - 0.01) + 1 / st["epochs"])
        """
    )
    msg_id = kernel.send(cell)
    deadline = time.monotonic() + 60
    while (not log.exists() or len(log.read_text().splitlines()) < 8) and time.monotonic() < deadline:
        time.sleep(0.02)
    kernel.manager.interrupt_kernel()
    messages = kernel.collect(msg_id)
    assert errors(messages) == []
    out = stdout(messages)
    assert out.startswith("new study lr-")
    assert "Run this cell again to resume." in out
    check = kernel.run("print(search.reason.value, search.evaluations, search.study)")
    reason, done, study = stdout(check).split()
    assert reason == "interrupted"
    assert 0 < int(done) < 22

    kernel.restart()
    kernel.run("%load_ext hbmagic")
    before = len(log.read_text().splitlines())
    messages = kernel.run(cell)
    assert errors(messages) == []
    out = stdout(messages)
    assert out.startswith(f"resuming: {done} of 22 evaluations reused (study {study})")
    check = kernel.run("print(search.reason.value, search.evaluations)")
    assert stdout(check).split() == ["completed", "22"]
    after = [line.split() for line in log.read_text().splitlines()[before:]]
    assert len(after) == 22 - int(done)  # only what was left ran
    promoted = [(trial, rung, start) for trial, rung, start in after if rung != "0"]
    assert promoted
    assert all(float(start) > 0 for _, _, start in promoted)  # states saved before the restart were reloaded

    messages = kernel.run(cell.replace("--seed 2", "--seed 2 --new"))
    assert stdout(messages).startswith("new study lr-")
