"""A real JupyterLab, headless Chromium, and the means to drive notebooks in it.

JupyterLab runs on 127.0.0.1 with a free port, its own settings, workspaces
and study folders; Chromium is Debian's (``/usr/bin/chromium``), driven by
Python Playwright. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from labserver import CHROMIUM, running_lab

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
WIDTH, HEIGHT = 1280, 900

pytestmark = pytest.mark.browser


class Lab:
    """A running JupyterLab: its URL and the folder it serves."""

    def __init__(self, url: str, root: Path):
        self.url, self.root = url, root

    def notebook(self, name: str, cells: list[str]) -> str:
        """Write a notebook of code cells into the served folder; returns its name."""
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, self.root / name)
        return name


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    base = tmp_path_factory.mktemp("lab")
    try:
        with running_lab(base) as (url, root):
            yield Lab(url, root)
    except RuntimeError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class Notebook:
    """A notebook open in its own JupyterLab workspace."""

    def __init__(self, page, lab: Lab, name: str):
        self.page, self.lab, self.name = page, lab, name
        self.workspace = f"hb{uuid.uuid4().hex[:8]}"

    def open(self) -> None:
        self.page.goto(f"{self.lab.url}/lab/workspaces/{self.workspace}/tree/{self.name}?reset")
        self.wait_ready()

    def wait_ready(self) -> None:
        self.page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=90_000)
        self.page.wait_for_selector(f"{self.panel} .jp-Cell", timeout=90_000)
        self.page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                return k && k.connectionStatus === 'connected' && k.status === 'idle';
            }""",
            timeout=90_000,
        )

    @property
    def panel(self) -> str:
        return ".jp-NotebookPanel:not(.lm-mod-hidden)"

    def command(self, name: str, args: dict | None = None, *, wait: bool = True) -> None:
        """Run a JupyterLab command; with ``wait=False``, return without waiting for it to finish."""
        script = "([name, args]) => window.jupyterapp.commands.execute(name, args)"
        if not wait:
            script = "([name, args]) => { window.jupyterapp.commands.execute(name, args); }"
        self.page.evaluate(script, [name, args or {}])

    def run_all(self) -> None:
        """Start running every cell (returns at once)."""
        self.command("notebook:run-all-cells", wait=False)

    def executing(self, index: int) -> bool:
        """Whether cell ``index`` shows the running prompt ``[*]`` (known to the page that ran it)."""
        return self.page.evaluate(
            "(i) => window.jupyterapp.shell.currentWidget.content.widgets[i].promptNode.textContent.includes('*')",
            index,
        )

    def kernel_status(self) -> str:
        return self.page.evaluate(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w && w.sessionContext.session && w.sessionContext.session.kernel;
                return k ? k.status : 'none';
            }"""
        )

    def wait_idle(self, timeout: float = 120) -> None:
        self.page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const cells = w.content.widgets;
                const k = w.sessionContext.session && w.sessionContext.session.kernel;
                return k && k.status === 'idle' && cells.every(c => c.model.type !== 'code' || !c.promptNode
                    || !c.promptNode.textContent.includes('*'));
            }""",
            timeout=timeout * 1000,
        )

    def save(self) -> None:
        """Save the notebook (outputs included) and wait until it is written."""
        self.page.evaluate("() => window.jupyterapp.shell.currentWidget.context.save()")

    def output_text(self, index: int) -> str:
        return self.page.evaluate(
            """(i) => {
                const w = window.jupyterapp.shell.currentWidget;
                return w.content.widgets[i].outputArea.node.innerText;
            }""",
            index,
        )

    def board_counts(self) -> dict[str, int]:
        """Cells per (row, rung) in the page: {"iteration:s:rung": count}."""
        return self.page.evaluate(
            f"""() => {{
                const out = {{}};
                for (const g of document.querySelectorAll('{self.panel} .hbm-root .hbm-rung[data-row]')) {{
                    out[g.dataset.row + ':' + g.dataset.rung] = g.querySelectorAll('.hbm-cell').length;
                }}
                return out;
            }}"""
        )

    def cell_states(self) -> dict[str, int]:
        return self.page.evaluate(
            f"""() => {{
                const out = {{}};
                for (const c of document.querySelectorAll('{self.panel} .hbm-root .hbm-board .hbm-cell')) {{
                    out[c.dataset.state] = (out[c.dataset.state] || 0) + 1;
                }}
                return out;
            }}"""
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.failed_call = report.failed


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda msg: messages.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: messages.append(f"pageerror: {err}"))
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" on reload while outputs change
    yield page
    if getattr(request.node, "failed_call", False):  # what the page showed, and said, when the test failed
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]", "_", request.node.name)
        page.screenshot(path=str(ARTIFACTS / f"failed-{name}.png"))
        (ARTIFACTS / f"failed-{name}.log").write_text("\n".join(messages))
    context.close()


@pytest.fixture
def open_notebook(page, lab):
    def opener(name: str, cells: list[str]) -> Notebook:
        lab.notebook(name, cells)
        notebook = Notebook(page, lab, name)
        notebook.open()
        return notebook

    return opener
