"""Every mistake in a ``%%hyperband`` header is a UsageError naming the token and what is allowed; nothing runs."""

import pytest

BODY = "ran.append(1)\nreport(loss=1.0)\n"


@pytest.fixture
def ran(ip):
    """A list the body appends to when it runs: it must stay empty for a refused cell."""
    ip.user_ns["ran"] = []
    return ip.user_ns["ran"]


HEADER_MISTAKES = [
    # (magic line, header lines, words the message must contain)
    ("--max-budget 9", "#| lr: logunifrm(1e-3, 1e-1)", ["'logunifrm'", "did you mean 'loguniform'", "line 2"]),
    ("--max-budget 9", "#| lr: loguniform(0, 1)", ["loguniform", "low is 0", "> 0"]),
    ("--max-budget 9", "#| x: uniform(2, 1)", ["uniform", "low < high"]),
    ("--max-budget 9", "#| x: uniform(1)", ["uniform takes 2 arguments", "1 were given"]),
    ("--max-budget 9", "#| x: quniform(1, 2)", ["quniform takes 3 arguments"]),
    ("--max-budget 9", "#| n: randint(1.5, 4)", ["randint", "1.5", "integer"]),
    ("--max-budget 9", "#| n: lograndint(0, 4)", ["lograndint", ">= 1"]),
    ("--max-budget 9", "#| 2lr: uniform(0, 1)", ["'2lr'", "Python identifier"]),
    ("--max-budget 9", "#| lr: uniform(0, 1)\n#| lr: uniform(0, 2)", ["'lr'", "defined twice"]),
    ("--max-budget 9 lr=uniform(0,1)", "#| lr: uniform(0, 2)", ["'lr'", "defined twice", "magic line"]),
    ("--max-budget 9", "#| lr loguniform(1e-3, 1e-1)", ["'#| lr loguniform(1e-3, 1e-1)'", "#| name: distribution"]),
    ("--max-budget 9", "#| act: choice()", ["choice", "at least one value"]),
    ("--max-budget 9", "#| act: choice(relu, tanh)", ["'relu'", "not a literal"]),
    ("--max-budget 9", "#| lr: __import__('os').getcwd()", ["does not name a distribution"]),
    ("--max-budget 9 lr=loguniform(1e-3,", "", ["unclosed parenthesis"]),
    ("--max-budget 9", "", ["no search space", "#| name: distribution"]),
    ("--max-budget 9", "#| budget: uniform(0, 1)", ["'budget'", "reserved"]),
    ("--max-budget 9", "#| trial: uniform(0, 1)", ["'trial'", "reserved"]),
    ("--max-budget 9", "#| report: uniform(0, 1)", ["'report'", "reserved"]),
    ("--max-budget 9", "#| device: choice('cpu')", ["'device'", "reserved"]),
    ("--max-budget 9", "#| len: uniform(0, 1)", ["'len'", "builtin len()"]),
    ("--max-budget 9", "#| math: uniform(0, 1)", ["'math'", "imported module 'math'"]),
]


@pytest.mark.parametrize(("line", "header", "words"), HEADER_MISTAKES)
def test_a_header_mistake_is_a_usage_error_and_nothing_runs(cells, ip, ran, line, header, words):
    ip.run_cell("import math")
    message = cells.refused(line, f"{header}\n{BODY}")
    assert message.startswith("%%hyperband: ")
    for word in words:
        assert word in message
    assert ran == []


OPTION_MISTAKES = [
    ("--max-budget 9 --eta 1", ["`--eta`", "1", ">= 2"]),
    ("--max-budget 9 --eta x", ["--eta", "'x'", "not an integer"]),
    ("--max-budget 0", ["`--max-budget`", "0", "> 0"]),
    ("--max-budget nine", ["--max-budget", "'nine'", "not a number"]),
    ("--max-budget 3 --min-budget 9", ["`--min-budget`", "`--max-budget`"]),
    ("--eta 3", ["`--max-budget` is required"]),
    ("--max-budget 9 --algorithm hb", ["--algorithm", "'hb'", "hyperband", "asha"]),
    ("--max-budget 9 --algorithm asha", ["asha needs a stopping rule", "`--max-trials`", "`--time-limit`"]),
    ("--max-budget 9 --convention paper", ["--convention", "'paper'", "alg1", "table"]),
    ("--max-budget 9 --mode best", ["--mode", "'best'", "min", "max"]),
    ("--max-budget 9 --brackets 7", ["`--brackets`", "7", "1..3"]),
    ("--max-budget 9 --total-budget 500", ["`--total-budget`", "`--n-configs`"]),
    ("--max-budget 9 --iterations 0", ["`--iterations`", ">= 1"]),
    ("--max-budget 9 --time-limit -5", ["`--time-limit`", "-5"]),
    ("--max-budget 9 --trial-timeout soon", ["--trial-timeout", "'soon'", "seconds"]),
    ("--max-budget 9 --workers 0", ["`--workers`", ">= 1"]),
    ("--max-budget 9 --executor gpu", ["--executor", "'gpu'", "threads"]),
    ("--max-budget 9 --executor inline --workers 2", ["`--workers`", "inline", "threads"]),
    ("--max-budget 9 --devices gpu0", ["`--devices`", "'gpu0'", "cuda:N"]),
    ("--max-budget 9 --cluster tcp://x:8786", ["`--cluster`", "dask"]),
    ("--max-budget 9 --study 'my study'", ["`--study`", "'my study'", "letters, digits"]),
    ("--max-budget 9 --max-budgte 4", ["unrecognized arguments: --max-budgte", "did you mean --max-budget?"]),
    ("--max-budget 9 lr", ["unrecognized arguments: lr", "name=distribution(...)"]),
    ("--max-budget 9 -o 1x", ["-o '1x'", "identifier"]),
    ("--max-budget 9 --seed 1.5", ["--seed", "'1.5'", "not an integer"]),
]


@pytest.mark.parametrize(("line", "words"), OPTION_MISTAKES)
def test_an_invalid_option_is_a_usage_error_and_nothing_runs(cells, ran, line, words):
    message = cells.refused(line, f"#| x: uniform(0, 1)\n{BODY}")
    assert message.startswith("%%hyperband: ")
    for word in words:
        assert word in message, message
    assert ran == []


def test_several_reported_metrics_without_metric_name_them(cells, ran):
    message = cells.refused("--max-budget 3", "#| x: uniform(0, 1)\nran.append(1)\nreport(loss=x, acc=1 - x)")
    assert "several metrics (loss, acc)" in message
    assert "--metric" in message
    assert len(ran) == 1  # found after the first evaluation, which is not repeated


def test_a_usage_error_is_shown_without_a_traceback(ip, ran, capsys):
    outcome = ip.run_cell("%%hyperband --max-budget 9\n#| lr: logunifrm(1e-3, 1e-1)\nran.append(1)\nreport(lr)")
    assert not outcome.success
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "UsageError: %%hyperband: line 2: lr: unknown distribution 'logunifrm'" in shown
    assert "Traceback" not in shown
    assert ran == []


def test_a_syntax_error_in_the_body_has_the_cells_line_numbers(cells, ran):
    body = "#| x: uniform(0, 1)\n\nran.append(1)\nfor epoch in range(trial.start, budget)\n    report(x)\n"
    message = cells.refused("--max-budget 3", body)
    assert "syntax error in the cell body at line 5" in message  # line 1 is the %%hyperband line
    assert "for epoch in range(trial.start, budget)" in message
    assert ran == []


def test_a_syntax_error_found_after_parsing_has_the_cells_line_numbers(cells, ran):
    message = cells.refused("--max-budget 3", "#| x: uniform(0, 1)\nran.append(1)\nnonlocal x\nreport(x)\n")
    assert "line 4" in message
    assert "nonlocal" in message


def test_global_in_the_body_is_refused(cells, ran):
    message = cells.refused("--max-budget 3", "#| x: uniform(0, 1)\nglobal best\nbest = x\nreport(x)\n")
    assert "line 3" in message
    assert "'global best' is not allowed" in message
    nested = cells.refused("--max-budget 3", "#| x: uniform(0, 1)\ndef keep():\n    global best\nreport(x)\n")
    assert "line 4" in nested
    assert ran == []


def test_yield_at_the_top_of_the_body_is_refused(cells, ran):
    message = cells.refused("--max-budget 3", "#| x: uniform(0, 1)\nfor i in range(3):\n    yield x\n")
    assert "line 4" in message
    assert "'yield'" in message


@pytest.mark.filterwarnings("ignore:hbmagic. the search space holds")
def test_the_magic_line_is_not_expanded(cells, ip):
    ip.user_ns.update(a="EXPANDED", b="EXPANDED")
    cells.run(
        '--max-budget 3 --seed 1 -o found word=choice("{a}","$b")',
        "report(len(word))\n",
    )
    words = {t.config["word"] for t in ip.user_ns["found"].trials.values()}
    assert words == {"{a}", "$b"}


def test_the_space_may_sit_on_the_magic_line_in_header_lines_or_both(cells, ip):
    cells.run("--max-budget 3 --seed 1 -o found lr=loguniform(1e-3,1e-1) act=choice('relu', 'tanh')", "report(lr)")
    assert set(ip.user_ns["found"].best.config) == {"lr", "act"}
    cells.run(
        "--max-budget 3 --seed 1 -o found", "#| lr: loguniform(1e-3, 1e-1)\n#| act: choice('relu', 'tanh')\nreport(lr)"
    )
    assert set(ip.user_ns["found"].best.config) == {"lr", "act"}
    cells.run(
        "--max-budget 3 --seed 1 -o found act=choice('relu', 'tanh')",
        "#| lr: loguniform(1e-3, 1e-1)\n\n#| units: 32\nreport(lr)",
    )
    found = ip.user_ns["found"]
    assert set(found.best.config) == {"act", "lr", "units"}
    assert {t.config["units"] for t in found.trials.values()} == {32}


def test_option_values_may_be_quoted(cells, ip, tmp_path):
    folder = tmp_path / "with space"
    cells.run(f'--max-budget 3 --storage "{folder}" --study "quoted" -o found', "#| x: uniform(0, 1)\nreport(x)")
    assert (folder / "quoted").is_dir()
    assert ip.user_ns["found"].study == "quoted"


def test_help_lists_every_option_of_the_design(ip, capsys):
    ip.run_cell("%%hyperband?")
    text = capsys.readouterr().out
    for option in (
        "--max-budget R",
        "--min-budget r",
        "--eta E",
        "--algorithm {hyperband,sh,asha}",
        "--convention {alg1,table}",
        "--brackets N",
        "--total-budget B",
        "--n-configs N",
        "--iterations K",
        "--max-trials N",
        "--time-limit S",
        "--metric NAME",
        "--mode {min,max}",
        "--seed S",
        "--executor {inline,threads,processes,dask}",
        "--workers N",
        "--devices LIST",
        "--trials-per-device K",
        "--cluster ADDRESS",
        "--offload",
        "--storage DIR",
        "--study NAME",
        "--new",
        "--max-failures N",
        "--trial-timeout S",
        "-o VAR",
        "--apply",
        "--no-widget",
    ):
        assert option in text, option
    assert "%%hyperband" in text
    assert "#| name: distribution" in text
