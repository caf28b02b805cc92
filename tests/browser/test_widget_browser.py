"""The live widget in a real JupyterLab page, in headless Chromium.

Each test opens a notebook whose ``%%hyperband`` cell runs a small search and
checks what the page shows: the board against the plan, lanes, curves, hover
text, a mid-run reload, the dark theme, the fit at 1280 pixels and Stop.
Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import re
import time

import pytest

from hbmagic import make_plan

pytestmark = pytest.mark.browser

FINAL = {"done", "promoted", "stopped", "failed", "skipped"}
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
ROOT = f"{PANEL} .hbm-root"


def search_cell(options: str, sleep: float | str, seed: int, fail: str = "") -> str:
    """A search whose epochs sleep ``sleep`` seconds (a file name: as many as the file says, read each epoch).

    With ``fail``, a condition on the hyperparameters under which the evaluation raises.
    """
    pause = f"float(open({sleep!r}).read())" if isinstance(sleep, str) else repr(sleep)
    raises = f"if {fail}:\n    raise ValueError(f'lr={{lr:.3f}} diverged')\n" if fail else ""
    return (
        f"%%hyperband {options} --metric loss --seed {seed}\n"
        "#| lr: loguniform(1e-3, 1)\n"
        "#| width: choice(16, 32, 64)\n"
        "import time\n"
        f"{raises}"
        "for epoch in range(trial.start, budget):\n"
        f"    time.sleep({pause})\n"
        "    report(loss=(1 - lr) ** (epoch + 1) + 0.1 / width)\n"
    )


def planned_counts(**plan_options) -> dict[str, int]:
    plan = make_plan(**plan_options)
    return {f"0:{b.s}:{i}": rung.n for b in plan.brackets for i, rung in enumerate(b.rungs)}


def wait_for(page, script: str, arg=None, timeout: float = 90) -> None:
    """Wait until ``script`` is true in the page; on a timeout, say what the board showed."""
    try:
        page.wait_for_function(script, arg=arg, timeout=timeout * 1000)
    except Exception as err:
        seen = page.evaluate(
            """(root) => [...document.querySelectorAll(root)].map(r => ({
                status: r.dataset.status,
                live: r.closest('.hbm-output') ? r.closest('.hbm-output').dataset.live : null,
                summary: (r.querySelector('.hbm-summary') || {}).innerText,
            }))""",
            ROOT,
        )
        raise AssertionError(f"timed out after {timeout} s waiting for {script}; the page showed {seen}") from err


def final_cells(notebook) -> int:
    return sum(n for state, n in notebook.cell_states().items() if state in FINAL)


def luminance(css_color: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", css_color)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_live_board_lanes_curves_hover_reload_and_themes(open_notebook, lab, page, artifacts):
    expected = planned_counts(max_budget=27, eta=3)
    pace = lab.root / "pace.txt"  # seconds per epoch: slow while the page is checked mid-run, then fast
    pace.write_text("0.4")
    notebook = open_notebook(
        "live.ipynb",
        ["%load_ext hbmagic", search_cell("--max-budget 27 --eta 3 --executor threads --workers 2", pace.name, 3)],
    )
    notebook.run_all()

    # Running: the board has every planned cell, lanes show the trials running there.
    wait_for(page, f"() => document.querySelectorAll('{ROOT} .hbm-lane[data-busy=true]').length > 0")
    assert notebook.board_counts() == expected
    lane_texts = page.locator(f"{ROOT} .hbm-lane[data-busy=true] .hbm-lane-trial").all_inner_texts()
    assert lane_texts and all(re.match(r"trial \d+ · rung \d+ · [\d.]+ / [\d.]+", t) for t in lane_texts)
    assert page.locator(f"{ROOT} .hbm-lane").count() == 2  # one lane per slot
    assert page.locator(f"{ROOT} .hbm-gpu:visible").count() == 0  # no NVML here: no GPU figures, nothing broken

    # Curves: drawn as evaluations report; rung budgets marked.
    wait_for(page, f"() => document.querySelectorAll('{ROOT} .hbm-curve').length >= 4")
    points = page.locator(f"{ROOT} .hbm-curve").first.get_attribute("points")
    assert points and len(points.split()) >= 1
    assert page.locator(f"{ROOT} .hbm-rung-mark").count() == 4  # budgets 1, 3, 9, 27
    wait_for(page, f"() => document.querySelectorAll('{ROOT} .hbm-board .hbm-cell[data-state=done]').length > 0")
    page.locator(ROOT).screenshot(path=str(artifacts / "board-running.png"))
    page.screenshot(path=str(artifacts / "page-running.png"))

    # Hover: configuration and metric of an evaluated cell.
    page.locator(f"{ROOT} .hbm-board .hbm-cell[data-state=done]").first.hover()
    tip = page.locator(f"{ROOT} .hbm-tip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert re.search(r"trial \d+", text) and "loss = " in text and "lr=" in text and "width=" in text
    page.locator(ROOT).screenshot(path=str(artifacts / "hover-done.png"))

    # Reload mid-run (after saving): the board is there and keeps updating while the cell still runs.
    assert notebook.executing(1)
    assert page.locator(ROOT).get_attribute("data-status") == "running"
    notebook.save()
    page.reload()
    page.wait_for_selector(f"{ROOT} .hbm-rung", timeout=60_000)
    assert notebook.board_counts() == expected
    summary = page.locator(f"{ROOT} .hbm-summary").inner_text()
    assert page.locator(ROOT).get_attribute("data-status") == "running", summary
    before = final_cells(notebook)
    wait_for(page, f"() => document.querySelector('{PANEL} .hbm-output').dataset.live === 'messages'")
    wait_for(
        page,
        f"(n) => [...document.querySelectorAll('{ROOT} .hbm-board .hbm-cell')]"
        ".filter(c => ['done','promoted','stopped','failed'].includes(c.dataset.state)).length > n",
        before,
    )
    page.locator(ROOT).screenshot(path=str(artifacts / "board-after-reload.png"))
    pace.write_text("0.01")

    # The end: every cell reached a final state, the widget view took over from the output's board.
    wait_for(page, f"() => document.querySelector('{ROOT}').dataset.status === 'completed'", timeout=120)
    wait_for(page, f"() => document.querySelector('{PANEL} .hbm-output').dataset.live === 'widget'")
    wait_for(
        page,
        f"() => [...document.querySelectorAll('{ROOT} .hbm-board .hbm-cell')].every(c => c.dataset.state !== 'queued'"
        " && c.dataset.state !== 'running')",
    )
    assert notebook.board_counts() == expected
    states = notebook.cell_states()
    assert set(states) <= FINAL, states
    assert sum(states.values()) == sum(expected.values())
    assert page.locator(f"{ROOT} .hbm-lane[data-busy=true]").count() == 0
    assert page.locator(f"{ROOT} .hbm-stop:visible").count() == 0
    best = page.locator(f"{ROOT} .hbm-curve.hbm-curve-best")
    assert best.count() == 1
    assert "best (minimizing loss): " in page.locator(f"{ROOT} .hbm-best").inner_text()

    # Hover on a stopped cell: why it was stopped.
    page.locator(f"{ROOT} .hbm-board .hbm-cell[data-state=stopped]").first.hover()
    tip = page.locator(f"{ROOT} .hbm-tip")
    tip.wait_for(state="visible")
    assert re.search(r"stopped: rank \d+ of \d+ at this rung \(cutoff [-\d.e]+\)", tip.inner_text())
    page.locator(ROOT).screenshot(path=str(artifacts / "hover-stopped.png"))
    page.mouse.move(0, 0)
    page.locator(ROOT).screenshot(path=str(artifacts / "board-final.png"))
    assert_fits(page)

    # Dark theme: JupyterLab's variables, so the board turns dark and its text light.
    light_background = page.evaluate(f"() => getComputedStyle(document.querySelector('{ROOT}')).backgroundColor")
    notebook.command("apputils:change-theme", {"theme": "JupyterLab Dark"})
    wait_for(page, "() => document.body.dataset.jpThemeLight === 'false'")
    wait_for(page, "() => !document.querySelector('#jupyterlab-splash')")  # the theme change shows a splash
    wait_for(
        page,
        f"(light) => getComputedStyle(document.querySelector('{ROOT}')).backgroundColor !== light",
        light_background,
    )
    style = page.evaluate(
        f"""() => {{
            const root = document.querySelector('{ROOT}');
            const queued = root.querySelector('.hbm-cell[data-state=promoted]');
            return [getComputedStyle(root).backgroundColor, getComputedStyle(root).color,
                    getComputedStyle(queued).borderTopColor];
        }}"""
    )
    assert luminance(style[0]) < 0.25 and luminance(style[1]) > 0.6, style
    assert luminance(style[2]) > 0.6, style  # the promoted ring stays visible on the dark background
    page.locator(ROOT).screenshot(path=str(artifacts / "board-dark.png"))
    page.screenshot(path=str(artifacts / "page-dark.png"))
    notebook.command("apputils:change-theme", {"theme": "JupyterLab Light"})
    wait_for(page, "() => document.body.dataset.jpThemeLight === 'true'")


def assert_fits(page) -> None:
    """No sideways scrolling: the output and the board fit their containers."""
    selectors = ", ".join(
        [f"{PANEL} .jp-OutputArea-output", ROOT, f"{ROOT} .hbm-board", f"{PANEL} .jp-WindowedPanel-outer"]
    )
    sizes = page.evaluate(
        "(s) => [...document.querySelectorAll(s)].map(n => [n.className.split(' ')[0], n.scrollWidth, n.clientWidth])",
        selectors,
    )
    assert sizes
    for name, scroll, client in sizes:
        assert scroll <= client, f"{name}: scrollWidth {scroll} > clientWidth {client}"


@pytest.mark.parametrize("max_budget", [81, 243])
def test_board_fits_1280_pixels_with_the_side_bar_open(open_notebook, page, artifacts, max_budget):
    expected = planned_counts(max_budget=max_budget, eta=3)
    notebook = open_notebook(
        f"fit{max_budget}.ipynb",
        ["%load_ext hbmagic", search_cell(f"--max-budget {max_budget} --eta 3 --executor inline", 0, 5, "lr > 0.6")],
    )
    left = page.evaluate("() => document.querySelector('#jp-left-stack').getBoundingClientRect().width")
    if left < 100:
        notebook.command("application:toggle-left-area")
    assert page.evaluate("() => document.querySelector('#jp-left-stack').getBoundingClientRect().width") > 100
    assert page.viewport_size["width"] == 1280
    notebook.run_all()
    notebook.wait_idle()
    wait_for(
        page,
        f"() => document.querySelector('{ROOT}') && document.querySelector('{ROOT}').dataset.status === 'completed'",
    )
    assert notebook.board_counts() == expected
    assert set(notebook.cell_states()) <= FINAL
    wait_for(page, f"() => document.querySelectorAll('{ROOT} .hbm-curve.hbm-active').length === 0")
    assert_fits(page)
    page.locator(ROOT).screenshot(path=str(artifacts / f"board-r{max_budget}.png"))

    # Hover on a failed evaluation: its error.
    page.locator(f"{ROOT} .hbm-board .hbm-cell[data-state=failed]").first.hover()
    tip = page.locator(f"{ROOT} .hbm-tip")
    tip.wait_for(state="visible")
    assert re.search(r"error: ValueError: lr=0\.\d{3} diverged", tip.inner_text())
    assert_fits(page)  # the hover text stays inside the output too
    page.locator(ROOT).screenshot(path=str(artifacts / f"hover-failed-r{max_budget}.png"))


def test_stop_ends_a_longer_search_with_its_partial_result(open_notebook, page, artifacts):
    cell = search_cell("--max-budget 27 --eta 3 --executor threads --workers 2 -o stopped", 0.5, 11)
    notebook = open_notebook("stop.ipynb", ["%load_ext hbmagic", cell])
    began = time.monotonic()
    notebook.run_all()
    wait_for(
        page,
        f"() => [...document.querySelectorAll('{ROOT} .hbm-board .hbm-cell')]"
        ".filter(c => c.dataset.state === 'done').length >= 3",
        timeout=90,
    )
    stop = page.locator(f"{ROOT} .hbm-stop")
    assert stop.is_visible()
    stop.click()
    notebook.wait_idle(timeout=60)
    assert time.monotonic() - began < 60  # the whole search would take about 90 s
    wait_for(page, f"() => document.querySelector('{ROOT}').dataset.status === 'interrupted'")
    text = notebook.output_text(1)
    assert "Interrupted:" in text and "Run this cell again to resume." in text
    assert re.search(r"best \(minimized loss\): loss=[\d.e-]+ \(trial \d+", text)
    states = notebook.cell_states()
    assert "running" not in states and states.get("queued", 0) > 0, states
    assert "run again to resume" in page.locator(f"{ROOT} .hbm-message").inner_text()
    page.locator(ROOT).screenshot(path=str(artifacts / "stopped.png"))

    # Kept and resumable: running the cell again reuses what was done.
    done = sum(n for state, n in states.items() if state in FINAL)
    notebook.run_all()
    wait_for(
        page,
        "() => window.jupyterapp.shell.currentWidget.content.widgets[1].outputArea.node.innerText.includes('resuming')",
        timeout=60,
    )
    assert re.search(rf"resuming: {done} of 69 evaluations reused", notebook.output_text(1))
    wait_for(
        page, f"() => document.querySelector('{ROOT}') && document.querySelector('{ROOT}').dataset.status === 'running'"
    )
    assert final_cells(notebook) >= done
    page.locator(f"{ROOT} .hbm-stop").click()
    notebook.wait_idle(timeout=60)
