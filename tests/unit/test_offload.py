"""``--offload``: torch state moves to the CPU between rungs and back onto the trial's device."""

import pytest

from hbmagic import tune
from hbmagic.statecodec import move_to

torch = pytest.importorskip("torch")


def trained_state():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()  # creates the momentum buffers
    return {"model": model, "opt": opt, "extra": [torch.zeros(3), (torch.ones(1), 5)], "epoch": 3}


def devices_in(state):
    found = {p.device.type for p in state["model"].parameters()}
    found |= {v.device.type for s in state["opt"].state.values() for v in s.values() if torch.is_tensor(v)}
    found |= {state["extra"][0].device.type, state["extra"][1][0].device.type}
    return found


def test_move_to_reaches_modules_optimizer_state_and_nested_tensors():
    # The meta device stands in for a second device on a machine without a GPU.
    state = trained_state()
    model, opt = state["model"], state["opt"]
    moved = move_to(state, "meta")
    assert devices_in(moved) == {"meta"}
    assert moved["model"] is model and moved["opt"] is opt and moved["epoch"] == 3


def test_offload_keeps_the_search_correct_on_the_cpu():
    starts = []

    def objective(trial):
        state = trial.state
        if not state:
            torch.manual_seed(trial.seed)
            state.update(trained_state())
        starts.append((trial.rung, trial.start, devices_in(state)))
        return float(sum(p.detach().sum() for p in state["model"].parameters())) + trial.config["x"]

    result = tune(objective, {"x": "uniform(0, 1)"}, max_budget=9, seed=0, offload=True, executor="threads", workers=2)
    assert result.complete
    assert all(start > 0 and found == {"cpu"} for rung, start, found in starts if rung > 0)


@pytest.mark.gpu
def test_offload_moves_state_off_the_gpu_between_rungs():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    seen, between = {}, []

    def objective(trial):
        state = trial.state
        if not state:
            state.update(trained_state())
            move_to(state, trial.device)
        assert devices_in(state) == {"cuda"}  # brought back onto the trial's device
        # Moved in place: the optimizer still steps the model's own parameters.
        assert state["opt"].param_groups[0]["params"][0] is next(state["model"].parameters())
        seen[trial.id] = state
        return trial.config["x"]

    def after(event):
        if type(event).__name__ == "EvaluationEnded" and event.trial in seen:
            between.append(devices_in(seen[event.trial]))  # as soon as the evaluation ended

    result = tune(
        objective, {"x": "uniform(0, 1)"}, max_budget=9, seed=0, offload=True, executor="threads", observers=[after]
    )
    assert result.complete
    assert between and all(found == {"cpu"} for found in between)
