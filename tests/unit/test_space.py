"""The search-space language: distributions as objects and as header text, and seeded sampling."""

import contextlib
import math
import os
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hbmagic.space import (
    Choice,
    Constant,
    LogRandInt,
    LogUniform,
    QUniform,
    RandInt,
    Space,
    SpaceError,
    Uniform,
    choice,
    loguniform,
    parse_distribution,
    parse_header_lines,
    randint,
    split_magic_line,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uniform(0, 1)", Uniform(0, 1)),
        ("loguniform(1e-3, 1e-1)", LogUniform(1e-3, 1e-1)),
        ("randint(16, 256)", RandInt(16, 256)),
        ("lograndint(1, 1024)", LogRandInt(1, 1024)),
        ("quniform(0, 1, 0.25)", QUniform(0, 1, 0.25)),
        ('choice("relu", "tanh")', Choice(("relu", "tanh"))),
        ("choice(16, 32, 64, 128)", Choice((16, 32, 64, 128))),
        ("choice(True, False, None, 0.5, 'x')", Choice((True, False, None, 0.5, "x"))),
        ("0.9", Constant(0.9)),
        ("'adam'", Constant("adam")),
        ("uniform(low=-1, high=1)", Uniform(-1, 1)),
        ("quniform(0, 10, q=2)", QUniform(0, 10, 2)),
        ("  uniform( 0 ,  1 )  ", Uniform(0, 1)),
    ],
)
def test_every_distribution_parses_from_text(text, expected):
    assert parse_distribution(text) == expected


def test_text_form_round_trips():
    for dist in (loguniform(1e-3, 0.1), randint(1, 9), choice("a", 2, None), QUniform(0, 1, 0.1), Constant(3)):
        assert parse_distribution(str(dist)) == dist


def test_header_lines_and_magic_line_tokens():
    space = parse_header_lines([(2, "#| lr: loguniform(1e-3, 1e-1)"), (3, "#|act:choice('relu', 'tanh')")])
    assert space == {"lr": LogUniform(1e-3, 1e-1), "act": Choice(("relu", "tanh"))}
    options, entries = split_magic_line('--max-budget 27 hidden=randint( 16, 256 ) act=choice("a b", "c") -o out')
    assert options == ["--max-budget", "27", "-o", "out"]
    assert entries == {"hidden": RandInt(16, 256), "act": Choice(("a b", "c"))}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("loguniorm(1e-3, 1)", "did you mean 'loguniform'?"),
        ("randnt(1, 3)", "did you mean 'randint'?"),
        ("uniform(1, 0)", "must be low < high"),
        ("uniform(0)", "takes 2 arguments (low, high), but 1 were given"),
        ("uniform(0, 1, 2)", "takes 2 arguments"),
        ("randint(1.5, 3)", "must be an integer"),
        ("loguniform(0, 1)", "must be > 0"),
        ("lograndint(0, 8)", "must be >= 1"),
        ("quniform(0, 1, 0)", "q is 0, but must be > 0"),
        ("choice()", "at least one value"),
        ("choice([1, 2])", "must be numbers, strings, booleans or None"),
        ("choice(1, 1)", "listed twice"),
        ("uniform(0, x)", "not a literal"),
        ("uniform(0, 1e999)", "must be finite"),
        ("uniform(0, 1", "not valid syntax"),
        ("", "missing"),
        ("np.uniform(0, 1)", "does not name a distribution"),
        ("uniform(*a)", "not allowed"),
        ("uniform(0, 1, lo=2)", "has no argument 'lo'"),
    ],
)
def test_mistakes_are_space_errors_that_name_the_token(text, fragment):
    with pytest.raises(SpaceError) as info:
        parse_distribution(text, "line 4: lr")
    message = str(info.value)
    assert fragment in message
    assert "line 4: lr" in message


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        ([(2, "#| lr loguniform(1e-3, 1)")], "is not a search-space line"),
        ([(2, "#| 2lr: uniform(0, 1)")], "'2lr' is not a valid name"),
        ([(2, "#| class: uniform(0, 1)")], "'class' is not a valid name"),
        ([(2, "#| lr: uniform(0, 1)"), (3, "#| lr: uniform(0, 2)")], "'lr' is defined twice"),
    ],
)
def test_malformed_header_lines(lines, fragment):
    with pytest.raises(SpaceError, match=fragment) as info:
        parse_header_lines(lines)
    assert f"line {lines[-1][0]}" in str(info.value)


def test_unbalanced_magic_line_is_an_error():
    with pytest.raises(SpaceError, match="unclosed"):
        split_magic_line("lr=uniform(0, 1")
    with pytest.raises(SpaceError, match="unbalanced"):
        split_magic_line("lr=uniform(0, 1))")


def test_text_is_never_evaluated(tmp_path):
    marker = tmp_path / "ran"
    attack = f"__import__('os').system('touch {marker}')"
    for text in (attack, f"uniform(0, {attack})", f"choice({attack})"):
        with pytest.raises(SpaceError):
            parse_distribution(text)
    with pytest.raises(SpaceError):
        parse_header_lines([(2, f"#| x: {attack}")])
    assert not marker.exists()
    assert os.path.exists(tmp_path)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=string.printable + "é∞\x00", max_size=80))
def test_arbitrary_text_only_ever_raises_space_error(text):
    for parse in (
        lambda: parse_distribution(text),
        lambda: parse_header_lines([(2, "#| x: " + text)]),
        lambda: parse_header_lines([(2, text)]),
        lambda: split_magic_line(text),
    ):
        with contextlib.suppress(SpaceError):
            parse()


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"(uniform|loguniform|randint|lograndint|quniform|choice)\([-0-9e., ]{0,20}\)", fullmatch=True))
def test_near_valid_calls_only_raise_space_error(text):
    with contextlib.suppress(SpaceError):
        parse_distribution(text)


def test_sampling_depends_only_on_seed_and_ordinal():
    space = Space({"lr": "loguniform(1e-4, 1)", "units": randint(8, 512), "act": choice("relu", "tanh")})
    forward = [space.config(7, i) for i in range(50)]
    order = list(range(50))
    random.Random(3).shuffle(order)
    shuffled = {i: space.config(7, i) for i in order}
    assert [shuffled[i] for i in range(50)] == forward
    assert forward != [space.config(8, i) for i in range(50)]
    for config in forward:
        assert 1e-4 <= config["lr"] <= 1 and 8 <= config["units"] <= 512 and config["act"] in ("relu", "tanh")


def test_finite_space_is_sampled_without_replacement():
    # 6 cell types x 5 learning rates x 7 regularisers = 210 configurations.
    space = Space(
        {
            "cell": choice("lstm", "gru", "rnn", "tcn", "mlp", "attn"),
            "lr": choice(1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
            "reg": quniform_grid(),
        }
    )
    assert space.size == 210
    first = [tuple(space.config(1, i).values()) for i in range(210)]
    assert len(set(first)) == 210
    second = [tuple(space.config(1, i).values()) for i in range(210, 420)]
    assert set(second) == set(first) and second != first


def quniform_grid():
    return QUniform(0, 0.6, 0.1)


def test_quniform_values_are_clean_multiples():
    dist = QUniform(0, 0.6, 0.1)
    assert [dist.value_at(i) for i in range(dist.size)] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert QUniform(0, 100, 25).value_at(3) == 75


def test_lograndint_favours_small_values():
    rng = random.Random(0)
    draws = [LogRandInt(1, 1024).sample(rng) for _ in range(4000)]
    assert min(draws) >= 1 and max(draws) <= 1024
    assert sum(d <= 32 for d in draws) > 0.4 * len(draws)  # half the log range: about half the draws


def test_loguniform_is_uniform_in_log_space():
    rng = random.Random(1)
    logs = [math.log10(LogUniform(1e-4, 1).sample(rng)) for _ in range(4000)]
    below = sum(x < -2 for x in logs) / len(logs)
    assert 0.45 < below < 0.55


def test_space_accepts_objects_text_and_constants():
    space = Space({"lr": loguniform(1e-3, 1e-1), "units": "randint(1, 4)", "opt": "'sgd'", "momentum": 0.9})
    config = space.config(0, 0)
    assert config["opt"] == "sgd" and config["momentum"] == 0.9
    assert space.to_text() == {
        "lr": "loguniform(0.001, 0.1)",
        "units": "randint(1, 4)",
        "opt": "'sgd'",
        "momentum": "0.9",
    }
    with pytest.raises(SpaceError, match="not a valid name"):
        Space({"bad name": 1})
    with pytest.raises(SpaceError, match="mapping"):
        Space([("lr", 1)])
