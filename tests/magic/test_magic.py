"""The magic's own surface: loading, -o, --apply, the end of the output, interrupts, and %hyperband."""

import os
import signal
import subprocess
import sys
import textwrap

from hbmagic import EndReason
from hbmagic.plan import make_plan

BODY = """\
#| lr: loguniform(1e-3, 1e-1)
#| units: randint(8, 64)
for epoch in range(trial.start, budget):
    report(loss=abs(lr - 0.01) + 1 / (epoch + 1) + units / 1e4)
"""


def test_load_ext_registers_the_magics_and_imports_nothing_heavy():
    script = textwrap.dedent(
        """
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "hbmagic")
        magics = ip.magics_manager.magics
        print("hyperband" in magics["cell"], "hyperband" in magics["line"])
        print(sorted(m for m in ("torch", "dask", "distributed", "matplotlib", "pandas") if m in sys.modules))
        ip.run_line_magic("unload_ext", "hbmagic")
        print("hyperband" in magics["cell"], "hyperband" in magics["line"])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.splitlines() == ["True True", "[]", "False False"]


def test_import_hbmagic_does_not_import_ipython_or_heavy_packages():
    heavy = ("IPython", "torch", "dask", "pandas", "matplotlib", "ipywidgets")
    script = f"import sys, hbmagic; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_the_output_starts_with_the_study_and_ends_with_the_best(cells, ip, capsys):
    cells.run("--max-budget 9 --seed 2 -o search", BODY)
    lines = capsys.readouterr().out.splitlines()
    search = ip.user_ns["search"]
    assert lines[0] == f"new study {search.study} (in {os.environ['HBMAGIC_DIR']})"
    assert search.study.startswith("lr-units-")
    assert "-o: the Result is in `search`" in lines
    assert lines[-1] == f"best (minimized loss): {search.best}"
    assert f"lr={search.best.config['lr']:.4g}" in lines[-1]
    assert search.reason is EndReason.COMPLETED


def test_apply_binds_the_best_configuration_and_says_what_it_replaced(cells, ip, capsys):
    ip.user_ns["lr"] = 0.5
    ip.user_ns.pop("units", None)
    cells.run("--max-budget 9 --seed 2 -o search --apply", BODY)
    out = capsys.readouterr().out
    best = ip.user_ns["search"].best.config
    assert ip.user_ns["lr"] == best["lr"]
    assert ip.user_ns["units"] == best["units"]
    said = f"lr = {best['lr']!r} (was 0.5); units = {best['units']} (was not defined)"
    assert f"--apply bound the best configuration: {said}" in out


def test_an_interrupt_shows_and_keeps_the_partial_result_and_says_how_to_resume(cells, ip, capsys):
    ip.user_ns["interrupt_at"] = 4
    body = BODY.replace(
        "for epoch",
        "if trial.id == interrupt_at and trial.rung == 0:\n    import os, signal, time\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(5)\nfor epoch",
    )
    cells.run("--max-budget 9 --seed 2 -o search", body)
    out = capsys.readouterr().out
    search = ip.user_ns["search"]
    assert search.reason is EndReason.INTERRUPTED
    assert 0 < search.evaluations < make_plan(max_budget=9).evaluations
    assert f"Interrupted: {search.evaluations} finished evaluations are kept in study {search.study}." in out
    assert "Run this cell again to resume." in out
    assert out.rstrip().splitlines()[-1].startswith("best (minimized loss): ")
    done = search.evaluations
    ip.user_ns["interrupt_at"] = -1
    cells.run("--max-budget 9 --seed 2 -o search", body)
    out = capsys.readouterr().out
    assert out.startswith(f"resuming: {done} of 22 evaluations reused (study {search.study})")
    assert ip.user_ns["search"].reason is EndReason.COMPLETED


def test_a_changed_body_is_a_new_study_but_comments_and_spacing_are_not(cells, capsys):
    cells.run("--max-budget 3 --seed 2", BODY)
    capsys.readouterr()
    cells.run("--max-budget 3 --seed 2", BODY.replace("report(", "# the metric\n    report(  "))
    assert capsys.readouterr().out.startswith("resuming: 6 of 6 evaluations reused")
    cells.run("--max-budget 3 --seed 2", BODY.replace("1e4", "1e3"))
    assert capsys.readouterr().out.startswith("new study ")
    cells.run("--max-budget 3 --seed 2 --no-widget --executor threads", BODY.replace("1e4", "1e3"))
    assert capsys.readouterr().out.startswith("resuming: 6 of 6")  # where and how it shows are not in the key
    cells.run("--max-budget 3 --seed 2 --new", BODY.replace("1e4", "1e3"))
    assert capsys.readouterr().out.startswith("new study ")


def test_hyperband_plan_prints_the_bracket_table(ip, capsys):
    ip.run_line_magic("hyperband", "plan --max-budget 81 --eta 3")
    assert capsys.readouterr().out.strip() == make_plan(max_budget=81, eta=3).table()
    ip.run_line_magic("hyperband", "plan --max-budget 8 --eta 2 -o planned")
    assert ip.user_ns["planned"] == make_plan(max_budget=8, eta=2)
    assert capsys.readouterr().out.startswith("-o: the Plan is in `planned`\n")
    ip.run_line_magic("hyperband", "plan --max-budget 81 --convention table")
    out = capsys.readouterr().out
    assert out.strip() == make_plan(max_budget=81, convention="table").table()
    assert "convention table" in out


def test_hyperband_plan_refuses_bad_values(ip, capsys):
    outcome = ip.run_cell("%hyperband plan --max-budget 81 --eta 1")
    assert not outcome.success
    captured = capsys.readouterr()
    assert "UsageError: %hyperband plan: The value of `--eta` is 1, but must be an integer >= 2" in captured.err
    outcome = ip.run_cell("%hyperband plot")
    assert "invalid choice: 'plot'" in capsys.readouterr().err


def test_hyperband_list_show_and_delete_manage_stored_studies(cells, ip, capsys, studies):
    ip.run_line_magic("hyperband", "list")
    assert capsys.readouterr().out.strip() == f"no studies in {studies}"
    cells.run("--max-budget 3 --seed 2 -o search --study first", BODY)
    cells.run("--max-budget 3 --seed 3 -o search", BODY)
    second = ip.user_ns["search"]
    capsys.readouterr()
    ip.run_line_magic("hyperband", "list")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"studies in {studies}:"
    assert {line.split(":")[0].strip() for line in out[1:]} == {"first", second.study}
    assert all("completed, 6/6 evaluations, best loss=" in line for line in out[1:])

    ip.run_line_magic("hyperband", "show first -o shown")
    out = capsys.readouterr().out
    shown = ip.user_ns["shown"]
    assert shown.study == "first"
    assert shown.evaluations == 6
    assert out.splitlines()[-1] == f"best (minimized loss): {shown.best}"

    ip.run_line_magic("hyperband", "delete first")
    assert capsys.readouterr().out.strip() == f"deleted study first from {studies}"
    assert not (studies / "first").exists()
    outcome = ip.run_cell("%hyperband show first")
    assert not outcome.success
    err = capsys.readouterr().err
    assert "no study named 'first'" in err
    assert second.study in err
    outcome = ip.run_cell("%hyperband delete")
    assert "give the study's name" in capsys.readouterr().err


def test_storage_and_study_options_choose_where_the_journal_lives(cells, ip, tmp_path):
    cells.run(f"--max-budget 3 --seed 2 -o search --storage {tmp_path / 'elsewhere'} --study mine", BODY)
    assert (tmp_path / "elsewhere" / "mine").is_dir()
    ip.run_line_magic("hyperband", f"show mine --storage {tmp_path / 'elsewhere'} -o shown")
    assert ip.user_ns["shown"].evaluations == 6


def test_a_named_study_made_from_another_cell_is_refused(cells):
    cells.run("--max-budget 3 --seed 2 --study shared", BODY)
    message = cells.refused("--max-budget 3 --seed 2 --study shared", BODY.replace("1e4", "1e3"))
    assert "study 'shared'" in message
    assert "different objective" in message
    assert "--new" in message


def test_sigint_handler_is_restored_after_a_search(cells):
    before = signal.getsignal(signal.SIGINT)
    cells.run("--max-budget 3 --seed 2", BODY)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_storage_that_is_a_file_is_a_usage_error(ip, capsys, tmp_path):
    (tmp_path / "file").write_text("")
    outcome = ip.run_cell(f"%hyperband list --storage {tmp_path / 'file'}")
    assert not outcome.success
    err = capsys.readouterr().err
    assert "UsageError: %hyperband list: The value of `--storage`" in err
    assert "a file; it must be a folder" in err
