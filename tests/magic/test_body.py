"""The cell body becomes a generated function, exactly as DESIGN.md section 1 says."""

import math
import os
import subprocess
import sys
import textwrap

import cloudpickle
import pytest

from hbmagic.body import BodyError, compile_body
from hbmagic.space import SpaceError


def test_notebook_globals_are_readable_and_assigned_names_stay_inside(cells, ip):
    ip.run_cell("offset = 0.5\nlr = 123\ndef loss(x):\n    return (x - offset) ** 2")
    cells.run(
        "--max-budget 3 --seed 2 -o found",
        "#| lr: uniform(0, 1)\nscaled = lr * 2\nepochs_seen = list(range(trial.start, budget))\nreport(loss=loss(lr))",
    )
    ns = ip.user_ns
    assert ns["lr"] == 123  # the hyperparameter shadowed the notebook's lr inside the body only
    assert "scaled" not in ns
    assert "epochs_seen" not in ns
    found = ns["found"]
    for record in found.trials.values():
        for values in record.metrics.values():
            assert values["loss"] == pytest.approx((record.config["lr"] - 0.5) ** 2)


def test_closures_generator_expressions_and_comprehensions_see_the_hyperparameters(cells, ip):
    body = """\
#| lr: uniform(0, 1)
#| width: randint(1, 4)
def scaled(i):
    return lr * i
total = sum(scaled(i) for i in range(width))
squares = [lr * i for i in range(width)]
by_name = {name: lr for name in ["a"]}
report(total - sum(squares) + by_name["a"])
"""
    cells.run("--max-budget 3 --seed 3 -o found", body)
    for record in ip.user_ns["found"].trials.values():
        assert record.value == pytest.approx(record.config["lr"])


def test_the_last_expression_is_returned_when_nothing_is_reported(cells, ip):
    cells.run("--max-budget 3 --seed 4 -o found", "#| x: uniform(0, 1)\ny = x * 3\n(y - 1) ** 2\n")
    found = ip.user_ns["found"]
    assert found.metric == "value"
    for record in found.trials.values():
        assert record.value == pytest.approx((record.config["x"] * 3 - 1) ** 2)
    assert found.mode == "min"


def test_return_in_the_body_gives_the_metric(cells, ip):
    cells.run("--max-budget 3 --seed 4 -o found", "#| x: uniform(0, 1)\nif x > 0.5:\n    return 1.0\nx")
    for record in ip.user_ns["found"].trials.values():
        assert record.value == pytest.approx(1.0 if record.config["x"] > 0.5 else record.config["x"])


def test_the_body_sees_budget_trial_report_and_device(cells, ip):
    ip.user_ns["seen"] = []
    body = (
        "#| x: uniform(0, 1)\nseen.append((trial.id, trial.config['x'] == x, budget, trial.budget, device))\nreport(x)"
    )
    cells.run("--max-budget 9 --seed 5", body)
    seen = ip.user_ns["seen"]
    assert len(seen) == 22  # the R=9, eta=3 plan's evaluations
    assert all(same for _, same, _, _, _ in seen)
    assert all(isinstance(b, int) and b == tb for _, _, b, tb, _ in seen)
    assert {b for _, _, b, _, _ in seen} == {1, 3, 9}
    assert {d for *_, d in seen} == {"cpu"}


def test_ipython_syntax_in_the_body_is_transformed(cells, ip, tmp_path, monkeypatch):
    ip.user_ns["seen"] = []
    monkeypatch.chdir(tmp_path)
    cells.run("--max-budget 1 --seed 6", "#| x: uniform(0, 1)\nhere = %pwd\nseen.append(here)\nreport(x)")
    assert ip.user_ns["seen"] == [str(tmp_path)]


def test_two_trials_in_parallel_threads_keep_their_own_names(cells, ip):
    """Both trials assign the same names at the same time; neither sees the other's values."""
    ip.run_cell("import threading, time\nmeeting = threading.Barrier(2, timeout=20)\nseen = []\nmine = 'notebook'")
    body = """\
#| lr: uniform(0, 1)
mine = (trial.id, lr)
if trial.id < 2 and trial.rung == 0:
    meeting.wait()          # both trials are running now, each has assigned `mine`
    time.sleep(0.05)
    mine = (mine[0], mine[1], lr)
    meeting.wait()
    seen.append((trial.id, mine, trial.config["lr"], threading.current_thread().name))
report(lr)
"""
    cells.run("--max-budget 3 --seed 7 --executor threads --workers 2", body)
    seen = ip.user_ns["seen"]
    assert sorted(trial for trial, *_ in seen) == [0, 1]
    for trial, mine, lr, _ in seen:
        assert mine == (trial, lr, lr)
    assert seen[0][3] != seen[1][3]  # two threads
    assert ip.user_ns["mine"] == "notebook"
    assert "lr" not in ip.user_ns


def test_prints_in_the_body_are_kept_per_trial_not_poured_into_the_cell(cells, ip, capsys):
    cells.run("--max-budget 3 --seed 8 -o found", "#| x: uniform(0, 1)\nprint(f'training trial {trial.id}')\nreport(x)")
    out = capsys.readouterr().out
    assert "training trial" not in out
    for record in ip.user_ns["found"].trials.values():
        assert f"training trial {record.id}" in record.output


def test_a_failing_body_shows_the_cells_line_in_its_traceback(cells, ip):
    body = "#| x: uniform(0, 1)\nif trial.id == 1:\n    raise ValueError(f'bad x {x:.2f}')\nreport(x)"
    cells.run("--max-budget 3 --seed 9 -o found", body)
    error = ip.user_ns["found"].trials[1].error
    assert "line 4, in <hyperband cell>" in error  # line 1 is the %%hyperband line
    assert "raise ValueError(f'bad x {x:.2f}')" in error
    assert "ValueError: bad x" in error
    assert "hbmagic" not in error.split("\n", 1)[1]  # the engine's own frames are left out


def test_a_body_that_fails_on_every_evaluation_stops_early_and_shows_its_error_once(cells, ip, capsys):
    ip.user_ns["ran"] = []
    message = cells.refused("--max-budget 9 -o found", "#| x: uniform(0, 1)\nran.append(1)\n1 / 0\n")
    assert message.count("ZeroDivisionError: division by zero") == 1
    assert "the first 3 evaluations all failed" in message
    assert len(ip.user_ns["ran"]) == 3  # of 22 planned
    assert ip.user_ns["found"].failures == 3  # -o keeps the partial result
    assert "ZeroDivisionError" not in capsys.readouterr().out


# -- compile_body itself ---------------------------------------------------------------------------


def test_the_key_ignores_comments_and_spacing_but_not_code():
    def key(text):
        return compile_body(text, ["lr"], {}).key

    base = key("y = lr * 2\nreport(y)\n")
    assert key("# a comment\ny  =  lr*2   # why\n\n\nreport( y )\n") == base
    assert key("y = lr * 3\nreport(y)\n") != base
    assert key("z = lr * 2\nreport(z)\n") != base


def test_the_generated_function_takes_keywords_and_reserved_names():
    body = compile_body("lr + budget", ["lr"], {})
    assert body.function(lr=1, budget=2, trial=None, report=None, device="cpu") == 3
    with pytest.raises(TypeError):
        body.function(1, 2, None, None, "cpu")


def test_a_name_hiding_a_module_is_refused_but_a_plain_variable_may_be_shadowed():
    with pytest.raises(SpaceError, match="imported module 'os'"):
        compile_body("lr", ["os"], {"os": os})
    assert compile_body("lr", ["lr"], {"lr": 0.1}).names == ("lr",)


def test_a_syntax_error_keeps_line_numbers_after_leading_blank_lines():
    with pytest.raises(BodyError, match="at line 5"):
        compile_body("\n\n\nx = (\n", ["lr"], {}, first_line=2)


def test_the_objective_pickles_and_runs_in_another_process(tmp_path):
    namespace = {"__name__": "__main__", "offset": 0.25}
    exec("def loss(v):\n    return (v - offset) ** 2", namespace)
    body = compile_body("print('hi')\nreport(loss(lr))\nlr * budget", ["lr"], namespace)
    data = tmp_path / "objective.pkl"
    data.write_bytes(cloudpickle.dumps(body.objective()))
    script = textwrap.dedent(
        f"""
        import pickle
        from hbmagic.trial import Trial
        objective = pickle.loads(open({str(data)!r}, "rb").read())
        reports = []
        trial = Trial(id=0, config={{"lr": 0.5}}, seed=1, iteration=0, bracket=0, rung=0, budget=3,
                      device="cpu", start=0, state=None, metric=None, send=reports.append, cancelled=lambda: None)
        print(objective(trial), trial.latest)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.splitlines() == ["hi", "1.5 {'value': 0.0625}"]


def test_a_failure_in_another_process_shows_the_body_line(tmp_path):
    body = compile_body("x = 1\nraise RuntimeError('boom')", ["lr"], {"__name__": "__main__"})
    data = tmp_path / "objective.pkl"
    data.write_bytes(cloudpickle.dumps(body.objective()))
    script = textwrap.dedent(
        f"""
        import pickle, traceback
        from hbmagic.trial import Trial
        objective = pickle.loads(open({str(data)!r}, "rb").read())
        trial = Trial(id=0, config={{"lr": 0.5}}, seed=1, iteration=0, bracket=0, rung=0, budget=3,
                      device="cpu", start=0, state=None, metric=None, send=print, cancelled=lambda: None)
        try:
            objective(trial)
        except RuntimeError:
            traceback.print_exc()
        """
    )
    err = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60).stderr
    assert "line 3, in <hyperband cell>" in err
    assert "raise RuntimeError('boom')" in err


def test_the_body_runs_in_worker_processes_with_the_notebook_globals_it_uses(cells, ip):
    ip.run_cell("import math\noffset = 0.3\ndef loss(v):\n    return (v - offset) ** 2 + math.sin(v)")
    body = (
        "#| x: uniform(0, 1)\nimport os\nprint('pid', os.getpid())\n"
        "if trial.id == 3:\n    raise ValueError('bad trial')\nreport(loss=loss(x))\n"
    )
    cells.run("--max-budget 3 --seed 1 -o found --executor processes --workers 2", body)
    found = ip.user_ns["found"]
    for record in found.trials.values():
        if record.id == 3:
            assert "line 6, in <hyperband cell>" in record.error
            assert "raise ValueError('bad trial')" in record.error
        else:
            assert record.value == pytest.approx((record.config["x"] - 0.3) ** 2 + math.sin(record.config["x"]))
    pids = {int(t.output.split()[1]) for t in found.trials.values()}
    assert os.getpid() not in pids


@pytest.mark.gpu
def test_on_a_gpu_the_body_gets_its_device_as_torchs_current_device(cells, ip):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (the CPU case: test_the_body_sees_budget_trial_report_and_device)")
    ip.user_ns.update(torch=torch, seen=[])
    body = (
        "#| x: uniform(0, 1)\n"
        "seen.append((device, torch.cuda.current_device(), torch.ones(1, device=device).device.type))\nreport(x)"
    )
    cells.run("--max-budget 3 --seed 1 --devices 0", body)
    assert set(ip.user_ns["seen"]) == {("cuda:0", 0, "cuda")}
