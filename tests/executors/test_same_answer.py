"""Same answer everywhere: for synchronous Hyperband with a deterministic objective and a fixed seed,
inline, threads and processes create the same trials, take the same decisions and find the same best
configuration, also when evaluations take random times so that they finish in a different order.
"""

from __future__ import annotations

import textwrap

import pytest

from hbmagic import tune
from hbmagic.events import EvalStatus, EvaluationEnded, TrialCreated, TrialPromoted, TrialStopped

SPACE = {
    "lr": "loguniform(1e-4, 1e-1)",
    "units": "randint(8, 128)",
    "act": "choice('relu', 'tanh', 'gelu')",
}

CELL = """
import math, random, time

def objective(trial):
    # The value depends on the configuration and the budget only; the time it takes does not.
    st = trial.state
    if not st:
        st["epochs"] = 0
    assert st["epochs"] == trial.start, (st["epochs"], trial.start)
    c = trial.config
    for _ in range(int(trial.start), int(trial.budget)):
        if JITTER:
            time.sleep(random.random() * JITTER)
        st["epochs"] += 1
        loss = (math.log10(c["lr"]) + 2.5) ** 2 + abs(c["units"] - 64) / 200 + (c["act"] == "tanh") * 0.1
        trial.report(val_loss=loss + 1 / st["epochs"])
"""


def objective(jitter: float):
    namespace = {"__name__": "__main__", "JITTER": jitter}  # as a notebook defines it
    exec(textwrap.dedent(CELL), namespace)
    return namespace["objective"]


def search(executor: str, jitter: float) -> dict:
    events = []
    result = tune(
        objective(jitter),
        SPACE,
        max_budget=27,
        eta=3,
        seed=11,
        iterations=2,
        executor=executor,
        workers=None if executor == "inline" else 3,
        observers=[events.append],
    )
    assert result.complete and result.failures == 0

    ended = [e for e in events if isinstance(e, EvaluationEnded)]
    assert all(e.status is EvalStatus.COMPLETED for e in ended)
    return {
        "trials": sorted(
            (e.trial, e.iteration, e.bracket, sorted(e.config.items()), e.seed)
            for e in events
            if isinstance(e, TrialCreated)
        ),
        "values": sorted((e.trial, e.rung, e.budget, e.value, e.trained) for e in ended),
        "promoted": sorted((e.trial, e.rung, e.budget, e.rank) for e in events if isinstance(e, TrialPromoted)),
        "stopped": sorted(
            (e.trial, e.rung, e.value, e.rank, e.of, e.cutoff) for e in events if isinstance(e, TrialStopped)
        ),
        "best": (result.best.trial, result.best.config, result.best.value),
        "order": [(e.trial, e.rung) for e in ended],
    }


@pytest.mark.parametrize("jitter", [0.0, 0.006], ids=["instant", "random-durations"])
def test_inline_threads_and_processes_agree(jitter):
    reference = search("inline", 0.0)
    assert len(reference["values"]) == 2 * 69  # R=27, eta=3: 69 evaluations per iteration
    orders = []
    for executor in ("threads", "processes"):
        answer = search(executor, jitter)
        orders.append(answer.pop("order"))
        assert answer == {k: v for k, v in reference.items() if k != "order"}, executor
    if jitter:
        assert any(order != reference["order"] for order in orders)  # the finishing order did differ
