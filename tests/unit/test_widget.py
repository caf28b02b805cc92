"""The live widget as an observer, without a browser.

In this process (no kernel: the widget's comm goes nowhere) for the state it
keeps; in a real kernel (jupyter_client) for what it sends: how often, how
big, and the outputs a saved notebook, nbconvert and a terminal show.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

import hbmagic
from hbmagic.board import Board
from hbmagic.board_html import render_html, render_text
from hbmagic.widget import MODULE_NAME, MODULE_VERSION, SEARCH_MIME, WIDGET_MIME, GpuStats, HyperbandWidget

ROOT = Path(__file__).resolve().parents[2]
FINAL = {"done", "promoted", "stopped", "failed", "skipped"}


def objective(trial):
    """Learning curves that fall with the resource; wide configurations are better."""
    for epoch in range(int(trial.start), int(trial.budget)):
        trial.report(loss=(1 - trial.config["lr"]) ** (epoch + 1) + 0.1 / trial.config["width"])


SPACE = {"lr": "loguniform(1e-3, 1)", "width": "choice(16, 32, 64)"}


def search(widget: HyperbandWidget, function=objective, **options) -> hbmagic.Result:
    options = {"max_budget": 27, "eta": 3, "seed": 7, **options}
    result = hbmagic.tune(function, SPACE, observers=[widget], **options)
    assert widget.wait(30)
    return result


# -- the front-end's version -----------------------------------------------------------------


def test_frontend_version_equals_package_json():
    package = json.loads((ROOT / "package.json").read_text())
    widget = HyperbandWidget()
    assert (package["name"], package["version"]) == (MODULE_NAME, MODULE_VERSION)
    assert widget._model_module == widget._view_module == package["name"]
    assert widget._model_module_version == widget._view_module_version == package["version"]
    assert (widget._model_name, widget._view_name) == ("HyperbandModel", "HyperbandView")


def test_the_installed_extension_is_this_version():
    from jupyter_core.paths import jupyter_path

    package = json.loads((ROOT / "package.json").read_text())
    found = [Path(p) / "hbmagic" / "package.json" for p in jupyter_path("labextensions")]
    installed = [json.loads(p.read_text()) for p in found if p.exists()]
    assert installed, "the labextension is not installed: pip install -e . builds and installs it"
    assert installed[0]["version"] == package["version"]
    assert installed[0]["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")


def test_jupyter_labextension_list_shows_it_enabled_and_ok():
    import subprocess

    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True, text=True, timeout=120
    )
    plain = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)
    assert re.search(rf"hbmagic v{re.escape(MODULE_VERSION)} enabled\s+OK", plain), plain


def test_bad_settings_are_refused_with_what_was_given():
    with pytest.raises(ValueError, match=r"interval > 0.*got interval=0"):
        HyperbandWidget(interval=0)
    with pytest.raises(ValueError, match=r"batch >= 1.*batch=0"):
        HyperbandWidget(batch=0)


# -- the state the widget keeps -----------------------------------------------------------------


def test_traits_after_a_search_hold_the_whole_board():
    widget = HyperbandWidget()
    result = search(widget)
    plan = hbmagic.make_plan(max_budget=27, eta=3)

    rows = {row["key"]: [r["n"] for r in row["rungs"]] for row in widget.plan["rows"]}
    assert rows == {f"0:{b.s}": [r.n for r in b.rungs] for b in plan.brackets}
    assert len(widget.cells) == plan.evaluations == 69
    for key, cell in widget.cells.items():
        iteration, s, rung, index = map(int, key.split(":"))
        n = next(b for b in plan.brackets if b.s == s).rungs[rung].n
        assert iteration == 0 and 0 <= index < n
        assert cell["s"] in FINAL
    last = {f"0:{b.s}:{len(b.rungs) - 1}" for b in plan.brackets}
    for key, cell in widget.cells.items():
        expected = {"done"} if key.rsplit(":", 1)[0] in last else {"promoted", "stopped"}
        assert cell["s"] in expected, (key, cell)
    assert len(widget.trials) == plan.configurations == len(result.trials)
    for trial in result.trials.values():
        info = widget.trials[str(trial.id)]
        assert info["c"] == trial.config
        assert info["b"] == trial.bracket
        steps = dict(widget.curves[str(trial.id)])
        assert steps == {step: values["loss"] for step, values in trial.metrics.items()}
    summary = widget.summary
    assert summary["status"] == "completed"
    assert (summary["evaluations"], summary["planned"]) == (69, 69)
    assert summary["resource"] == summary["resourcePlanned"] == plan.resource
    assert summary["best"]["trial"] == result.best.trial
    assert summary["best"]["value"] == result.best.value
    assert summary["best"]["config"] == result.best.config
    assert summary["running"] == 0 and summary["eta"] is None
    assert [lane["label"] for lane in widget.lanes] == ["cpu #0"]
    assert widget.lanes[0]["trial"] is None and len(widget.lanes[0]["hist"]) == 6
    assert widget.gpus == {}  # no GPU here: nothing to show, nothing broken
    # What a front-end asking for the state gets: all of it, as strict JSON.
    state = widget.get_state()
    assert json.loads(json.dumps(state, allow_nan=False))["cells"] == widget.cells


def test_stopped_cells_say_why_and_failed_ones_keep_their_error():
    def flaky(trial):
        if trial.config["width"] == 16:
            raise ValueError(f"width {trial.config['width']} is too narrow")
        if trial.config["width"] == 32 and trial.config["lr"] > 0.1:
            trial.report(loss=math.nan)
            return
        objective(trial)

    widget = HyperbandWidget()
    result = search(widget, flaky, seed=3)
    failed = [c for c in widget.cells.values() if c["s"] == "failed"]
    assert failed and all("ValueError: width 16 is too narrow" in c["e"] for c in failed)
    assert len(failed) == result.failures
    stopped = [c for c in widget.cells.values() if c["s"] == "stopped"]
    assert stopped
    for cell in stopped:
        rank, of, cutoff = cell["r"]
        assert 1 <= rank <= of
        assert cutoff is None or isinstance(cutoff, float | str)
    assert any(c.get("v") == "nan" for c in widget.cells.values())  # NaN travels as text: JSON has none
    json.dumps(widget.get_state(), allow_nan=False)
    assert widget.summary["failures"] == result.failures


def test_an_interrupted_search_keeps_its_queued_cells_and_says_how_to_resume():
    calls = []

    def interrupted(trial):
        calls.append(trial.id)
        if len(calls) == 5:
            raise KeyboardInterrupt  # as a Stop (SIGINT) arriving in the middle of an evaluation
        objective(trial)

    widget = HyperbandWidget()
    result = search(widget, interrupted)
    assert result.reason is hbmagic.EndReason.INTERRUPTED
    states = [c["s"] for c in widget.cells.values()]
    assert "running" not in states
    assert widget.summary["status"] == "interrupted"
    assert "run again to resume" in widget.summary["message"]
    assert widget.summary["evaluations"] == result.evaluations == 4
    assert all(lane["trial"] is None for lane in widget.lanes)
    html = render_html(widget.snapshot())
    assert "interrupted" in html and "run again to resume" in html


def test_a_resumed_study_shows_what_it_reused_and_ends_complete(tmp_path):
    calls = []

    def stopped_once(trial):
        calls.append(trial.id)
        if len(calls) == 10:
            raise KeyboardInterrupt
        objective(trial)

    first = HyperbandWidget()
    search(first, stopped_once, storage=tmp_path, study="resumed")
    assert first.summary["status"] == "interrupted" and first.summary["evaluations"] == 9
    second = HyperbandWidget()
    result = search(second, stopped_once, storage=tmp_path, study="resumed")
    assert result.complete
    assert (second.info["resumed"], second.info["reused"]) == (True, 9)
    assert second.summary["evaluations"] == 69 and second.summary["resource"] == 357
    assert {c["s"] for c in second.cells.values()} <= FINAL and len(second.cells) == 69


def test_time_left_is_estimated_for_asha_from_max_trials():
    events = []
    hbmagic.tune(
        objective, SPACE, max_budget=27, eta=3, seed=7, algorithm="asha", max_trials=30, observers=[events.append]
    )
    ended = [i for i, e in enumerate(events) if type(e).__name__ == "EvaluationEnded"]
    board = Board()
    estimates, lefts = [], []
    for index, event in enumerate(events):
        board.apply(event)
        if index in ended[:-1]:
            estimates.append(board.expected_resource)
            lefts.append(board.summary(now=event.at + 1.0)["eta"])
    trained = board.resource
    # rungs 1, 3, 9, 27: 30 trials, 10 promoted to 3, 3.33 to 9, 1.11 to 27
    assert estimates[0] == pytest.approx(30 * 1 + 10 * 2 + 30 / 9 * 6 + 30 / 27 * 18)
    assert all(b >= a for a, b in itertools.pairwise(estimates))  # it only grows as ASHA promotes more
    assert all(left is not None and left >= 0 for left in lefts) and lefts[0] > lefts[-1]
    assert 0.7 * trained <= estimates[-1] <= trained  # near the end, close to what ASHA trained
    assert board.summary(now=events[-1].at)["eta"] is None  # finished


def test_time_left_is_not_guessed_for_asha_ended_by_a_time_limit():
    events = []
    hbmagic.tune(
        objective, SPACE, max_budget=27, eta=3, seed=7, algorithm="asha", time_limit=0.3, observers=[events.append]
    )
    board = Board()
    lefts = []
    for event in events:
        board.apply(event)
        if type(event).__name__ == "EvaluationEnded":
            lefts.append(board.summary(now=event.at + 1.0)["eta"])
    assert len(lefts) > 3 and board.resource > 0
    assert board.expected_resource is None and set(lefts) == {None}


# -- the display forms -----------------------------------------------------------------------


def test_the_output_carries_the_widget_view_the_board_html_and_a_text_summary():
    widget = HyperbandWidget()
    result = search(widget)
    bundle = widget._repr_mimebundle_()
    assert bundle[WIDGET_MIME]["model_id"] == widget.model_id
    snapshot = bundle[SEARCH_MIME]
    assert snapshot["model_id"] == widget.model_id and snapshot["version"] == MODULE_VERSION
    assert snapshot["state"]["cells"] == widget.cells
    html = bundle["text/html"]
    assert html.count("<span data-state=") == 69
    assert html.count('data-state="stopped"') == sum(1 for c in widget.cells.values() if c["s"] == "stopped")
    assert html.count('title="trial ') == 69  # every evaluated cell says what happened to it
    assert "stopped: rank" in html
    text = bundle["text/plain"]
    assert text.splitlines()[0].startswith("Hyperband: R=27, r=1, eta=3")
    assert "completed · 69 / 69 evaluations · 357 / 357 resource" in text
    assert f"trial {result.best.trial}" in text
    assert render_text({}) == render_text({"plan": {}}) == "hbmagic: waiting for the search to start…"


# -- in a real kernel ------------------------------------------------------------------------------


class Kernel:
    def __init__(self, folder: Path):
        self.manager, self.client = start_new_kernel(
            kernel_name="python3", env=dict(os.environ, HBMAGIC_DIR=str(folder))
        )

    def run(self, code: str, timeout: float = 120) -> list[dict]:
        """Run ``code``; every IOPub message it caused (comm messages from threads included)."""
        msg_id = self.client.execute(code)
        messages = []
        while True:
            msg = self.client.get_iopub_msg(timeout=timeout)
            messages.append(msg)
            content = msg["content"]
            if msg["msg_type"] == "error":
                raise AssertionError("\n".join(content["traceback"]))
            if (
                msg["msg_type"] == "status"
                and content["execution_state"] == "idle"
                and msg["parent_header"].get("msg_id") == msg_id
            ):
                return messages

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    kernel = Kernel(tmp_path_factory.mktemp("studies"))
    yield kernel
    kernel.close()


def widget_updates(messages: list[dict]) -> list[dict]:
    opened = [
        m["content"]["comm_id"]
        for m in messages
        if m["msg_type"] == "comm_open" and m["content"]["data"]["state"].get("_model_name") == "HyperbandModel"
    ]
    assert len(opened) == 1
    return [m for m in messages if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == opened[0]]


def run_live(kernel: Kernel, iterations: int, batch: int = 500) -> list[dict]:
    code = (
        "import hbmagic\n"
        "from hbmagic.widget import HyperbandWidget\n"
        f"w = HyperbandWidget.live(batch={batch})\n"
        "r = hbmagic.tune(lambda t: t.report(t.config['x']), {'x': 'uniform(0, 1)'}, max_budget=81, eta=3,\n"
        f"                iterations={iterations}, seed=1, observers=[w])\n"
        "assert w.wait(60)\n"
    )
    return kernel.run(code)


def test_updates_are_throttled_and_their_size_does_not_grow_with_the_trials(kernel):
    sizes = {}
    for iterations in (3, 12):  # 618 and 2,472 no-op evaluations, in a fraction of a second each
        updates = widget_updates(run_live(kernel, iterations, batch=200))
        times = sorted(m["header"]["date"].timestamp() for m in updates)
        assert len(times) >= 5
        for i, start in enumerate(times):  # at most about ten a second, however fast evaluations end
            assert sum(1 for t in times[i:] if t < start + 1.0) <= 11
        sizes[iterations] = [len(json.dumps(m["content"]["data"])) for m in updates]
        for m in updates:
            state = m["content"]["data"]["state"]
            assert not {"cells", "trials", "curves"} & set(state)  # never the whole board: only batches
            delta = json.loads(state.get("delta") or "{}")
            items = len(delta.get("cells", {})) + len(delta.get("trials", {}))
            items += sum(len(p) for _, p in delta.get("points", {}).values())
            assert items <= 200 + 24  # the batch, and the round-robin refresh of a few cells
    assert max(sizes[12]) <= 40_000
    assert max(sizes[12]) <= 1.3 * max(sizes[3])  # four times the trials, the same size of update


def test_a_front_end_model_that_asks_again_gets_the_whole_board(kernel):
    """What a page reloaded mid-search does once its model listens (updates sent before that are lost to it)."""
    updates = widget_updates(run_live(kernel, 1))
    comm_id = updates[0]["content"]["comm_id"]
    message = kernel.client.session.msg(
        "comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "resync"}}}
    )
    kernel.client.shell_channel.send(message)
    while True:
        msg = kernel.client.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
            break
    state = msg["content"]["data"]["state"]
    assert {"plan", "info", "cells", "trials", "curves", "lanes", "summary", "delta"} <= set(state)
    assert state["summary"]["status"] == "completed"
    assert len(state["cells"]) == 206 and len(state["trials"]) == 143
    assert all(cell["s"] in FINAL for cell in state["cells"].values())


def test_in_a_kernel_the_output_is_one_display_updated_to_its_final_form(kernel):
    messages = run_live(kernel, 1)
    displays = [m for m in messages if m["msg_type"] in ("display_data", "update_display_data")]
    first, last = displays[0], displays[-1]
    assert first["msg_type"] == "display_data" and last["msg_type"] == "update_display_data"
    display_id = first["content"]["transient"]["display_id"]
    assert all(m["content"]["transient"]["display_id"] == display_id for m in displays)
    data = last["content"]["data"]
    assert {WIDGET_MIME, SEARCH_MIME, "text/html", "text/plain"} <= set(data)
    assert data[SEARCH_MIME]["state"]["summary"]["status"] == "completed"
    assert "completed · 206 / 206 evaluations" in data["text/plain"]


def test_live_view_is_the_widget_in_a_kernel_and_text_in_a_terminal(kernel):
    messages = kernel.run("from hbmagic.display import live_view\nprint(type(live_view()).__name__)")
    printed = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert printed.strip() == "HyperbandWidget"

    from IPython.testing import globalipapp

    from hbmagic.display import in_jupyter_kernel, live_view

    globalipapp.start_ipython()  # a terminal shell
    assert not in_jupyter_kernel()
    assert type(live_view()).__name__ == "TextProgress"


def test_a_saved_notebook_and_its_html_export_show_the_final_board(tmp_path, monkeypatch):
    from nbconvert import HTMLExporter

    monkeypatch.setenv("HBMAGIC_DIR", str(tmp_path / "studies"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext hbmagic"),
        nbformat.v4.new_code_cell(
            "%%hyperband --max-budget 9 --eta 3 --seed 2 --metric loss\n"
            "#| lr: uniform(0, 1)\n"
            "for epoch in range(trial.start, budget):\n"
            "    report(loss=(1 - lr) ** (epoch + 1))\n"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # As JupyterLab saves by default: the outputs, not the widget state.
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=False).execute()
    path = tmp_path / "search.ipynb"
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)
    displays = [o for o in saved.cells[1].outputs if o.output_type == "display_data"]
    assert len(displays) == 1  # one output per search, updated in place to its final form
    data = displays[0].data
    assert "completed · 22 / 22 evaluations" in data["text/plain"]
    assert data[SEARCH_MIME]["state"]["summary"]["status"] == "completed"
    html, _ = HTMLExporter().from_notebook_node(saved)
    assert 'class="hbmagic-static"' in html
    assert "22 / 22 evaluations" in html


# -- GPUs ------------------------------------------------------------------------------------------


def test_without_gpus_there_are_no_gpu_figures():
    assert GpuStats([]).read() == {}
    assert GpuStats(["cpu"]).read() == {}


@pytest.mark.gpu
def test_with_nvml_a_gpu_reports_memory_and_utilization():
    from hbmagic.devices import discover_gpus

    if not discover_gpus():
        pytest.skip("no CUDA device")
    pytest.importorskip("pynvml", reason="NVML's Python binding (nvidia-ml-py) is not installed")
    stats = GpuStats(["cuda:0"]).read()
    memory = stats["cuda:0"]
    assert 0 < memory["used"] <= memory["total"]
    assert memory["util"] is None or 0 <= memory["util"] <= 100
