"""Text progress without a widget: brackets and the best so far, updated in place, never a line per evaluation."""

import io
import os
import re
import signal
import subprocess
import sys

import hbmagic
from hbmagic.plan import make_plan
from hbmagic.progress import TextProgress

SPACE = {"x": "uniform(0, 1)"}


def train(trial):
    for epoch in range(int(trial.start), int(trial.budget)):
        trial.report(loss=(trial.config["x"] - 0.3) ** 2 + 1 / (epoch + 1))


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def screen(text):
    """What a terminal shows after ``text``: applies "cursor up N lines" + "clear to the end"."""
    lines = []
    for part in re.split(r"(\x1b\[\d+F\x1b\[J)", text):
        moved = re.fullmatch(r"\x1b\[(\d+)F\x1b\[J", part)
        if moved:
            del lines[len(lines) - int(moved.group(1)) :]
        else:
            lines.extend(part.splitlines())
    return lines


def test_in_a_terminal_the_block_is_rewritten_in_place():
    stream = Terminal()
    progress = TextProgress(stream, interval=0, kernel=False)
    result = hbmagic.tune(train, SPACE, max_budget=27, seed=1, observers=[progress])
    plan = make_plan(max_budget=27)
    shown = screen(stream.getvalue())
    assert len(shown) == 1 + len(plan.brackets)  # a status line and a line per bracket, nothing more
    assert shown[0].startswith(f"hyperband completed · {plan.evaluations}/{plan.evaluations} evaluations")
    best = result.best
    assert f"best (min) loss={best.value:.4g}, trial {best.trial} at 27" in shown[0]
    assert shown[1].split() == ["s=3", "27/27✓", "9/9✓", "3/3✓", "1/1✓", "budgets", "1→3→9→27"]
    assert shown[4].split() == ["s=0", "4/4✓", "budgets", "27"]
    assert progress.updates > plan.brackets[0].n  # it did update while running


def test_the_block_never_goes_into_a_trials_captured_output():
    stream = Terminal()
    result = hbmagic.tune(
        train, SPACE, max_budget=9, seed=1, observers=[TextProgress(stream, interval=0, kernel=False)]
    )
    assert "hyperband" in stream.getvalue()
    assert all("hyperband" not in t.output for t in result.trials.values())


def test_updates_are_throttled():
    stream = Terminal()
    frozen = TextProgress(stream, interval=10.0, kernel=False, clock=lambda: 0.0)
    hbmagic.tune(train, SPACE, max_budget=27, seed=1, observers=[frozen])
    brackets = len(make_plan(max_budget=27).brackets)
    # A clock that never moves allows only the forced draws: the start, each bracket's end, the end.
    assert frozen.updates == 1 + brackets + 1


def test_a_plain_stream_gets_a_line_per_bracket_and_the_final_block():
    stream = io.StringIO()
    hbmagic.tune(train, SPACE, max_budget=27, seed=1, observers=[TextProgress(stream, interval=0, kernel=False)])
    plan = make_plan(max_budget=27)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(plan.brackets) + 1 + len(plan.brackets)
    assert len(lines) < plan.evaluations / 5
    assert sorted(line.rsplit("bracket ", 1)[1] for line in lines[:4]) == [f"s={s} done" for s in range(4)]
    assert lines[4].startswith("hyperband completed")


def test_asha_rungs_show_counts():
    stream = Terminal()
    hbmagic.tune(
        train,
        SPACE,
        max_budget=9,
        algorithm="asha",
        max_trials=10,
        seed=1,
        observers=[TextProgress(stream, interval=0, kernel=False)],
    )
    shown = screen(stream.getvalue())
    assert shown[0].startswith("hyperband completed · ")
    assert shown[1].split()[:2] == ["s=2", "10"]


def test_through_the_magic_a_search_prints_a_few_lines_not_one_per_evaluation(cells, capsys):
    cells.run(
        "--max-budget 27 --seed 3 --no-widget",
        "#| x: uniform(0, 1)\nfor e in range(trial.start, budget):\n    report(x)",
    )
    out = capsys.readouterr().out.splitlines()
    evaluations = make_plan(max_budget=27).evaluations
    assert out[0].startswith("new study ")
    assert len(out) < evaluations / 3
    assert sum(line.startswith("hyperband completed") for line in out) == 1
    assert out[-1].startswith("best (minimized value): value=")


def test_the_progress_counts_failures():
    stream = Terminal()

    def failing(trial):
        if trial.id % 4 == 1:
            raise ValueError(f"trial {trial.id}")
        trial.report(1.0)

    hbmagic.tune(failing, SPACE, max_budget=9, seed=1, observers=[TextProgress(stream, interval=0, kernel=False)])
    assert " failed · " in screen(stream.getvalue())[0]


CRASHING = """
import os, signal, time

def objective(trial):
    if trial.id == 5 and os.environ.get("CRASH"):
        time.sleep(0.5)  # the other worker's results commit this evaluation's start
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies mid-evaluation
    return trial.config["x"]
"""


def test_a_study_resumed_after_a_crash_shows_no_stale_running_evaluation(tmp_path, monkeypatch):
    (tmp_path / "crashing.py").write_text(CRASHING)
    search = (
        f"hbmagic.tune(crashing.objective, {SPACE!r}, max_budget=9, seed=1, storage={str(tmp_path)!r}, "
        "executor='threads', workers=2)"
    )
    died = subprocess.run(
        [sys.executable, "-c", f"import hbmagic, crashing; {search}"],
        cwd=tmp_path,
        env={**os.environ, "CRASH": "1", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        timeout=120,
    )
    assert died.returncode == -signal.SIGKILL
    monkeypatch.syspath_prepend(str(tmp_path))
    import crashing

    stream = Terminal()
    progress = TextProgress(stream, interval=0, kernel=False)
    result = hbmagic.tune(crashing.objective, SPACE, max_budget=9, seed=1, storage=tmp_path, observers=[progress])
    assert result.resumed
    shown = screen(stream.getvalue())
    assert shown[0].startswith("hyperband completed · 22/22 evaluations · ")
    assert "running" not in shown[0].split("·", 1)[1]
