"""Bracket math: Hyperband's plan as small pure functions in integer arithmetic.

Symbols follow Li et al., "Hyperband" (JMLR 2018): ``R`` the maximum resource,
``r`` the minimum resource, ``eta`` the halving rate, ``s`` a bracket, ``n`` its
configurations, ``r_i`` the (cumulative) budget of rung ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

__all__ = [
    "Algorithm",
    "Bracket",
    "Convention",
    "Plan",
    "PlanError",
    "Rung",
    "asha_plan",
    "fixed_budget_plan",
    "hyperband_plan",
    "make_plan",
    "s_max",
]

Budget = int | float


class PlanError(ValueError):
    """Settings that do not make a plan; the message says which and what is allowed."""


class Convention(str, Enum):
    """How bracket sizes are computed."""

    ALG1 = "alg1"  # Li et al. 2018, Algorithm 1
    TABLE = "table"  # the paper's printed Table 1 (hpbandster, DEHB)


class Algorithm(str, Enum):
    HYPERBAND = "hyperband"
    SH = "sh"
    ASHA = "asha"


@dataclass(frozen=True)
class Rung:
    """``n`` configurations (None: as many as arrive) trained to cumulative budget ``budget``."""

    n: int | None
    budget: Budget


@dataclass(frozen=True)
class Bracket:
    """Bracket ``s``: successive halving from ``rungs[0]`` to ``rungs[-1]``."""

    s: int
    rungs: tuple[Rung, ...]

    @property
    def n(self) -> int:
        return self.rungs[0].n or 0


def s_max(max_budget: Budget, min_budget: Budget, eta: int) -> int:
    """``s_max``: the largest ``s`` with ``r * eta**s <= R``, counted exactly (never a float log)."""
    big, small = Fraction(max_budget), Fraction(min_budget)
    s = 0
    while small * eta ** (s + 1) <= big:
        s += 1
    return s


def rung_budget(max_budget: Budget, min_budget: Budget, eta: int, s: int, i: int) -> Budget:
    """``r_i = R * eta**(i - s)``: rounded down for an integer resource, never below ``r``."""
    exact = Fraction(max_budget) / Fraction(eta) ** (s - i)
    if isinstance(max_budget, int) and isinstance(min_budget, int):
        return max(min_budget, int(exact))  # int() of a positive Fraction rounds down
    return max(float(min_budget), float(exact))


def alg1_sizes(s_max_: int, eta: int, s: int) -> list[int]:
    """Algorithm 1: ``n = ceil(B/R * eta**s / (s+1))`` with ``B = (s_max+1) R``, then ``n_i = floor(n eta**-i)``."""
    n = -(-(s_max_ + 1) * eta**s // (s + 1))
    return [n // eta**i for i in range(s + 1)]


def table_sizes(s_max_: int, eta: int, s: int) -> list[int]:
    """Table 1 (hpbandster): ``n = floor((s_max+1)/(s+1)) eta**s``, then ``n_i = max(floor(n eta**-i), 1)``."""
    n = (s_max_ + 1) // (s + 1) * eta**s
    return [max(n // eta**i, 1) for i in range(s + 1)]


def hyperband_brackets(
    max_budget: Budget, min_budget: Budget, eta: int, convention: Convention, brackets: int | None = None
) -> tuple[Bracket, ...]:
    """The brackets ``s = s_max .. 0`` (or only the ``brackets`` most aggressive ones)."""
    top = s_max(max_budget, min_budget, eta)
    sizes = alg1_sizes if convention is Convention.ALG1 else table_sizes
    count = top + 1 if brackets is None else brackets
    return tuple(
        Bracket(
            s,
            tuple(
                Rung(n_i, rung_budget(max_budget, min_budget, eta, s, i)) for i, n_i in enumerate(sizes(top, eta, s))
            ),
        )
        for s in range(top, top - count, -1)
    )


def halving_rounds(n_configs: int, eta: int) -> int:
    """The smallest ``k`` with ``eta**k >= N``: rounds until one configuration is left."""
    k = 0
    while eta**k < n_configs:
        k += 1
    return max(k, 1)


def fixed_budget_rungs(total_budget: Budget, n_configs: int, eta: int, min_budget: Budget) -> tuple[Rung, ...]:
    """Successive halving with a total budget ``B`` over ``N`` configurations.

    Each of the ``k`` rounds spends ``B / k``; round ``i`` keeps ``n_i = floor(N eta**-i)``
    configurations and gives each ``floor(B / (k n_i))`` more resource.
    """
    rounds = halving_rounds(n_configs, eta)
    integer = isinstance(total_budget, int) and isinstance(min_budget, int)
    per_round = Fraction(total_budget) / rounds
    rungs: list[Rung] = []
    reached: Fraction = Fraction(0)
    for i in range(rounds):
        n_i = n_configs // eta**i
        extra = per_round / n_i
        if integer:
            extra = Fraction(int(extra))
        if extra <= 0 or reached + extra < Fraction(min_budget):
            raise PlanError(
                f"The value of `total_budget` is {total_budget}, too small for {n_configs} configurations: "
                f"round {i + 1} of {rounds} would give each of its {n_i} configurations {float(extra):g} "
                f"(the minimum budget is {min_budget}); allowed: total_budget >= {rounds * n_configs * min_budget}"
            )
        reached += extra
        rungs.append(Rung(n_i, int(reached) if integer else float(reached)))
    return tuple(rungs)


@dataclass(frozen=True)
class Plan:
    """What a search will run: its brackets (one iteration) and how often it repeats."""

    algorithm: Algorithm
    brackets: tuple[Bracket, ...]
    max_budget: Budget
    min_budget: Budget
    eta: int
    convention: Convention
    iterations: int = 1
    total_budget: Budget | None = None
    max_trials: int | None = None

    @property
    def configurations(self) -> int:
        """Configurations per iteration (0 for ASHA, which has no fixed count)."""
        return sum(b.n for b in self.brackets)

    @property
    def evaluations(self) -> int:
        """Evaluations per iteration, if every planned promotion happens."""
        return sum(r.n or 0 for b in self.brackets for r in b.rungs)

    @property
    def resource(self) -> Budget:
        """Resource per iteration when promoted trials resume: ``sum n_i (r_i - r_{i-1})``."""
        total: Budget = 0
        for bracket in self.brackets:
            previous: Budget = 0
            for rung in bracket.rungs:
                total += (rung.n or 0) * (rung.budget - previous)
                previous = rung.budget
        return total

    @property
    def resource_retrained(self) -> Budget:
        """Resource per iteration if promoted trials retrained from scratch: ``sum n_i r_i``."""
        return sum((r.n or 0) * r.budget for b in self.brackets for r in b.rungs)

    @property
    def fractional(self) -> bool:
        return not (isinstance(self.max_budget, int) and isinstance(self.min_budget, int))

    def describe(self) -> str:
        """One line naming the algorithm and its convention."""
        head = {
            Algorithm.HYPERBAND: "Hyperband",
            Algorithm.SH: "Successive halving",
            Algorithm.ASHA: "ASHA (asynchronous successive halving)",
        }[self.algorithm]
        if self.total_budget is not None:
            n = self.brackets[0].n
            return (
                f"{head}, fixed total budget B={self.total_budget} over N={n} configurations, eta={self.eta}: "
                f"{len(self.brackets[0].rungs)} rounds of {_fmt(self.total_budget / len(self.brackets[0].rungs))}"
            )
        parts = f"R={_fmt(self.max_budget)}, r={_fmt(self.min_budget)}, eta={self.eta}"
        if self.algorithm is Algorithm.ASHA:
            return f"{head}: {parts}; promotes a trial in the top 1/{self.eta} of its rung so far"
        convention = (
            "convention alg1 (Li et al. 2018, Algorithm 1)"
            if self.convention is Convention.ALG1
            else "convention table (the paper's Table 1, as hpbandster and DEHB)"
        )
        return f"{head}: {parts}, {convention}"

    def table(self) -> str:
        """The bracket table: ``n x r`` for each rung, with totals."""
        lines = [self.describe()]
        width = max(len(b.rungs) for b in self.brackets)
        cells = [[_cell(r) for r in b.rungs] for b in self.brackets]
        col = max(len(c) for row in cells for c in row)
        col = max(col, len(f"rung {width - 1}"))
        lines.append("bracket | " + "  ".join(f"rung {i}".ljust(col) for i in range(width)).rstrip())
        for bracket, row in zip(self.brackets, cells, strict=True):
            lines.append(f"{('s=' + str(bracket.s)):>7} | " + "  ".join(c.ljust(col) for c in row).rstrip())
        if self.algorithm is Algorithm.ASHA:
            stop = f"at most {self.max_trials} trials" if self.max_trials else "until the time limit"
            lines.append(f"each cell: budget per rung; trials start as workers free up, {stop}")
            return "\n".join(lines)
        lines.append("each cell: configurations x cumulative budget")
        repeat = f" per iteration, {self.iterations} iterations" if self.iterations > 1 else ""
        lines.append(
            f"{self.configurations:,} configurations, {self.evaluations:,} evaluations, "
            f"{_fmt(self.resource)} resource units when promoted trials resume "
            f"({_fmt(self.resource_retrained)} if they retrained){repeat}"
        )
        return "\n".join(lines)

    __str__ = table

    def to_dict(self) -> dict:
        return {
            "algorithm": self.algorithm.value,
            "brackets": [{"s": b.s, "rungs": [[r.n, r.budget] for r in b.rungs]} for b in self.brackets],
            "max_budget": self.max_budget,
            "min_budget": self.min_budget,
            "eta": self.eta,
            "convention": self.convention.value,
            "iterations": self.iterations,
            "total_budget": self.total_budget,
            "max_trials": self.max_trials,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        brackets = tuple(Bracket(b["s"], tuple(Rung(n, budget) for n, budget in b["rungs"])) for b in data["brackets"])
        return cls(
            algorithm=Algorithm(data["algorithm"]),
            brackets=brackets,
            max_budget=data["max_budget"],
            min_budget=data["min_budget"],
            eta=data["eta"],
            convention=Convention(data["convention"]),
            iterations=data["iterations"],
            total_budget=data["total_budget"],
            max_trials=data["max_trials"],
        )


def _fmt(value: Budget) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def _cell(rung: Rung) -> str:
    if rung.n is None:
        return f"r={_fmt(rung.budget)}"
    return f"{rung.n} x {_fmt(rung.budget)}"


def _check_budgets(max_budget: Budget, min_budget: Budget, eta: int) -> None:
    for name, value in (("max_budget", max_budget), ("min_budget", min_budget)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value != value:
            raise PlanError(f"The value of `{name}` is {value!r}, but must be a number > 0")
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise PlanError(f"The value of `eta` is {eta!r}, but must be an integer >= 2")
    if min_budget > max_budget:
        raise PlanError(
            f"The value of `min_budget` is {min_budget}, larger than `max_budget` {max_budget}; "
            "allowed: min_budget <= max_budget"
        )


def hyperband_plan(
    max_budget: Budget,
    min_budget: Budget = 1,
    eta: int = 3,
    convention: Convention | str = Convention.ALG1,
    brackets: int | None = None,
    iterations: int = 1,
) -> Plan:
    """Hyperband's brackets; ``brackets=N`` keeps only the N most aggressive."""
    _check_budgets(max_budget, min_budget, eta)
    convention = _enum(Convention, convention, "convention")
    top = s_max(max_budget, min_budget, eta) + 1
    if brackets is not None and (
        isinstance(brackets, bool) or not isinstance(brackets, int) or not 1 <= brackets <= top
    ):
        raise PlanError(
            f"The value of `brackets` is {brackets!r}, but must be an integer in 1..{top} for these budgets"
        )
    _check_iterations(iterations)
    algorithm = Algorithm.SH if brackets == 1 else Algorithm.HYPERBAND
    return Plan(
        algorithm,
        hyperband_brackets(max_budget, min_budget, eta, convention, brackets),
        max_budget,
        min_budget,
        eta,
        convention,
        iterations,
    )


def fixed_budget_plan(
    total_budget: Budget, n_configs: int, eta: int = 2, min_budget: Budget = 1, iterations: int = 1
) -> Plan:
    """Successive halving with a fixed total budget ``B`` over ``N`` configurations."""
    if isinstance(n_configs, bool) or not isinstance(n_configs, int) or n_configs < 2:
        raise PlanError(f"The value of `n_configs` is {n_configs!r}, but must be an integer >= 2")
    _check_budgets(total_budget, min_budget, eta)
    _check_iterations(iterations)
    rungs = fixed_budget_rungs(total_budget, n_configs, eta, min_budget)
    return Plan(
        Algorithm.SH,
        (Bracket(len(rungs) - 1, rungs),),
        rungs[-1].budget,
        min_budget,
        eta,
        Convention.ALG1,
        iterations,
        total_budget=total_budget,
    )


def asha_plan(max_budget: Budget, min_budget: Budget = 1, eta: int = 3, max_trials: int | None = None) -> Plan:
    """ASHA's rungs ``r, r eta, ..., R``: trials start at rung 0 and are promoted asynchronously."""
    _check_budgets(max_budget, min_budget, eta)
    top = s_max(max_budget, min_budget, eta)
    rungs = tuple(Rung(None, rung_budget(max_budget, min_budget, eta, top, i)) for i in range(top + 1))
    return Plan(
        Algorithm.ASHA, (Bracket(top, rungs),), max_budget, min_budget, eta, Convention.ALG1, 1, max_trials=max_trials
    )


def make_plan(
    *,
    max_budget: Budget | None = None,
    min_budget: Budget = 1,
    eta: int | None = None,
    algorithm: Algorithm | str = Algorithm.HYPERBAND,
    convention: Convention | str = Convention.ALG1,
    brackets: int | None = None,
    total_budget: Budget | None = None,
    n_configs: int | None = None,
    iterations: int = 1,
    max_trials: int | None = None,
) -> Plan:
    """The plan for any algorithm, from the options' keyword names.

    ``eta`` defaults to 3, and to 2 (halving) for the fixed-total-budget form.
    """
    algorithm = _enum(Algorithm, algorithm, "algorithm")
    if (total_budget is None) != (n_configs is None):
        raise PlanError("`total_budget` and `n_configs` go together: give both, as in total_budget=500, n_configs=16")
    if total_budget is not None:
        if algorithm is Algorithm.ASHA:
            raise PlanError("`total_budget` and `n_configs` make a successive-halving plan; they do not apply to asha")
        if max_budget is not None:
            raise PlanError("give either `max_budget` or `total_budget` with `n_configs`, not both")
        return fixed_budget_plan(total_budget, n_configs, eta or 2, min_budget, iterations)  # type: ignore[arg-type]
    if max_budget is None:
        raise PlanError("`max_budget` is required (the resource a trial reaches at most, such as 27 epochs)")
    eta = 3 if eta is None else eta
    if algorithm is Algorithm.ASHA:
        if iterations != 1:
            raise PlanError(f"The value of `iterations` is {iterations}, but asha has no iterations; allowed: 1")
        if brackets is not None:
            raise PlanError("`brackets` applies to hyperband and sh, not to asha")
        return asha_plan(max_budget, min_budget, eta, max_trials)
    if algorithm is Algorithm.SH:
        if brackets not in (None, 1):
            raise PlanError(f"The value of `brackets` is {brackets}, but sh is one bracket; allowed: 1")
        brackets = 1
    return hyperband_plan(max_budget, min_budget, eta, convention, brackets, iterations)


def _check_iterations(iterations: int) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise PlanError(f"The value of `iterations` is {iterations!r}, but must be an integer >= 1")


def _enum(cls: type[Enum], value: object, name: str):
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise PlanError(f"The value of `{name}` is {value!r}, but must be one of: {allowed}") from None
