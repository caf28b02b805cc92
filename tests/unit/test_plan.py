"""Golden tables: every (n_i, r_i) of the plans DESIGN.md and the paper fix."""

import pytest

from hbmagic.plan import Algorithm, PlanError, make_plan, s_max


def table(plan):
    return [[(r.n, r.budget) for r in b.rungs] for b in plan.brackets]


R81_ALG1 = [
    [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
    [(34, 3), (11, 9), (3, 27), (1, 81)],
    [(15, 9), (5, 27), (1, 81)],
    [(8, 27), (2, 81)],
    [(5, 81)],
]


def test_r81_eta3_algorithm_1():
    plan = make_plan(max_budget=81, eta=3)
    assert table(plan) == R81_ALG1
    assert [b.s for b in plan.brackets] == [4, 3, 2, 1, 0]
    assert plan.configurations == 143
    assert plan.evaluations == 206
    assert plan.resource == 1581
    assert plan.resource_retrained == 1902


def test_r81_eta3_paper_table():
    plan = make_plan(max_budget=81, eta=3, convention="table")
    assert table(plan) == [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        [(27, 3), (9, 9), (3, 27), (1, 81)],
        [(9, 9), (3, 27), (1, 81)],
        [(6, 27), (2, 81)],
        [(5, 81)],
    ]


def test_r27_eta3():
    assert table(make_plan(max_budget=27, eta=3)) == [
        [(27, 1), (9, 3), (3, 9), (1, 27)],
        [(12, 3), (4, 9), (1, 27)],
        [(6, 9), (2, 27)],
        [(4, 27)],
    ]


def test_r8_eta2():
    assert table(make_plan(max_budget=8, eta=2)) == [
        [(8, 1), (4, 2), (2, 4), (1, 8)],
        [(6, 2), (3, 4), (1, 8)],
        [(4, 4), (2, 8)],
        [(4, 8)],
    ]


def test_r243_eta3_counts_s_max_exactly():
    # A float log gives s_max = 4 here (log(243)/log(3) = 4.999...); the plan must have 6 brackets.
    assert s_max(243, 1, 3) == 5
    plan = make_plan(max_budget=243, eta=3)
    assert table(plan) == [
        [(243, 1), (81, 3), (27, 9), (9, 27), (3, 81), (1, 243)],
        [(98, 3), (32, 9), (10, 27), (3, 81), (1, 243)],
        [(41, 9), (13, 27), (4, 81), (1, 243)],
        [(18, 27), (6, 81), (2, 243)],
        [(9, 81), (3, 243)],
        [(6, 243)],
    ]


def test_r1000_eta10():
    assert table(make_plan(max_budget=1000, eta=10)) == [
        [(1000, 1), (100, 10), (10, 100), (1, 1000)],
        [(134, 10), (13, 100), (1, 1000)],
        [(20, 100), (2, 1000)],
        [(4, 1000)],
    ]


def test_minimum_budget_above_one():
    # R=81, r=3: s_max = 3 (3 * 27 = 81), budgets never below r.
    plan = make_plan(max_budget=81, min_budget=3, eta=3)
    assert table(plan) == [
        [(27, 3), (9, 9), (3, 27), (1, 81)],
        [(12, 9), (4, 27), (1, 81)],
        [(6, 27), (2, 81)],
        [(4, 81)],
    ]


def test_r_not_a_power_of_eta_rounds_budgets_down():
    # R=100, eta=3: s_max = 4; r_i = floor(100 / 3**(s-i)).
    plan = make_plan(max_budget=100, eta=3)
    assert table(plan)[0] == [(81, 1), (27, 3), (9, 11), (3, 33), (1, 100)]
    assert table(plan)[-1] == [(5, 100)]
    assert all(isinstance(r.budget, int) for b in plan.brackets for r in b.rungs)


def test_fixed_total_budget_500_over_16():
    # The talk's example: B=500 over N=16 halves in 4 rounds of 125 epochs each.
    plan = make_plan(total_budget=500, n_configs=16)
    assert plan.algorithm is Algorithm.SH
    assert table(plan) == [[(16, 7), (8, 22), (4, 53), (2, 115)]]
    rounds = [n * (b - prev) for (n, b), prev in zip(table(plan)[0], [0, 7, 22, 53], strict=True)]
    assert all(spent <= 125 for spent in rounds)
    assert "4 rounds of 125" in plan.table()


def test_brackets_keeps_the_most_aggressive():
    plan = make_plan(max_budget=81, brackets=2)
    assert table(plan) == R81_ALG1[:2]
    one = make_plan(max_budget=81, brackets=1)
    assert one.algorithm is Algorithm.SH and table(one) == R81_ALG1[:1]
    assert table(make_plan(max_budget=81, algorithm="sh")) == R81_ALG1[:1]


def test_fractional_resource_gives_floats():
    plan = make_plan(max_budget=1.0, min_budget=0.1, eta=3)
    budgets = [r.budget for r in plan.brackets[0].rungs]
    assert budgets == pytest.approx([1 / 9, 1 / 3, 1.0])
    assert all(isinstance(b, float) for b in budgets)


def test_iterations_multiply_totals_in_the_table():
    text = make_plan(max_budget=81, iterations=3).table()
    assert "3 iterations" in text


def test_plan_table_states_its_convention():
    assert "convention alg1" in make_plan(max_budget=81).table()
    assert "convention table" in make_plan(max_budget=81, convention="table").table()
    text = make_plan(max_budget=81).table()
    assert "143 configurations, 206 evaluations, 1,581 resource units" in text
    assert "(1,902 if they retrained)" in text


def test_plan_round_trips_through_a_dict():
    for plan in (
        make_plan(max_budget=81),
        make_plan(total_budget=500, n_configs=16),
        make_plan(max_budget=27, algorithm="asha", max_trials=9),
    ):
        assert type(plan).from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_budget": 81, "eta": 1}, "`eta` is 1, but must be an integer >= 2"),
        ({"max_budget": 0}, "`max_budget` is 0"),
        ({"max_budget": 9, "min_budget": 27}, "larger than `max_budget`"),
        ({"max_budget": 81, "brackets": 9}, "must be an integer in 1..5"),
        ({"max_budget": 81, "convention": "paper"}, "must be one of: alg1, table"),
        ({"max_budget": 81, "algorithm": "bohb"}, "must be one of: hyperband, sh, asha"),
        ({"total_budget": 500}, "go together"),
        ({"total_budget": 10, "n_configs": 16}, "too small for 16 configurations"),
        ({}, "`max_budget` is required"),
        ({"max_budget": 81, "algorithm": "asha", "iterations": 2}, "asha has no iterations"),
    ],
)
def test_bad_settings_say_what_is_allowed(kwargs, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        make_plan(**kwargs)
