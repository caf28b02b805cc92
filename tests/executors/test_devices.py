"""Devices: GPU discovery without importing torch, --devices, --trials-per-device, and worker pinning.

Discovery runs in a fresh interpreter for each case (torch may already be
imported in this one, and then it answers first). A stand-in nvidia-smi on
PATH prints what the real one prints; tests that need a real GPU are marked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hbmagic import OptionError, tune
from hbmagic.devices import discover_gpus, make_slots, parse_devices, pin, visible_ids

HAS_GPU = bool(discover_gpus())
gpu = pytest.mark.gpu


def fresh(code: str, env: dict[str, str | None] | None = None, path: str | None = None):
    """Run ``code`` in a new interpreter with ``env`` changes (None unsets); returns its last line as JSON."""
    environ = dict(os.environ)
    environ.pop("CUDA_VISIBLE_DEVICES", None)
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    if path is not None:
        environ["PATH"] = path
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=environ, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


DISCOVER = """
import json, sys
from hbmagic.devices import discover_gpus
print(json.dumps([discover_gpus(), "torch" in sys.modules]))
"""

SMI = """#!/bin/sh
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-11111111-2222-3333-4444-555555555555)"
echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-66666666-7777-8888-9999-000000000000)"
echo "  MIG 1g.10gb     Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)"
echo "GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-ffffffff-2222-3333-4444-555555555555)"
"""


@pytest.fixture(scope="module")
def smi_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bin")
    tool = folder / "nvidia-smi"
    tool.write_text(SMI)
    tool.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ("0,1", ["0", "1"]),
        (" 3 , 1 ", ["3", "1"]),
        ("", []),
        ("-1", []),
        ("1,-1,2", ["1"]),  # CUDA stops at the first entry it cannot read
        ("0,0,1", ["0"]),  # and at a repeated one
        ("GPU-8f6b5c3e-aaaa-bbbb,MIG-1c2d/1/0", ["GPU-8f6b5c3e-aaaa-bbbb", "MIG-1c2d/1/0"]),
    ],
)
def test_visible_ids_reads_cuda_visible_devices_as_cuda_does(value, ids):
    assert visible_ids(value) == ids


def test_discovery_reads_cuda_visible_devices_without_importing_torch(smi_path):
    assert fresh(DISCOVER, {"CUDA_VISIBLE_DEVICES": "4,6"}, smi_path) == [["cuda:0", "cuda:1"], False]
    assert fresh(DISCOVER, {"CUDA_VISIBLE_DEVICES": ""}, smi_path) == [[], False]


def test_discovery_asks_nvidia_smi_when_the_environment_does_not_say(smi_path):
    assert fresh(DISCOVER, {}, smi_path) == [["cuda:0", "cuda:1", "cuda:2"], False]


def test_discovery_finds_nothing_on_a_machine_without_gpus(tmp_path):
    if HAS_GPU:
        pytest.skip("this machine has a GPU")
    assert fresh(DISCOVER, {}, str(tmp_path)) == [[], False]


def test_torch_answers_first_when_it_is_already_imported(smi_path):
    torch = pytest.importorskip("torch")
    code = "import torch\n" + DISCOVER
    found, imported = fresh(code, {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, smi_path)
    assert imported and found == [f"cuda:{i}" for i in range(min(4, torch.cuda.device_count()))]


@pytest.mark.parametrize(
    ("given", "names"),
    [
        ("0,1", ["cuda:0", "cuda:1"]),
        ("cuda:1, cpu", ["cuda:1", "cpu"]),
        (["cuda:2", 3], ["cuda:2", "cuda:3"]),
        ("cuda", ["cuda:0"]),
        (None, None),
    ],
)
def test_devices_option_names(given, names):
    assert parse_devices(given) == names


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("gpu0", "The value of `devices` has 'gpu0', but each device must be 'cpu', 'cuda:N' or N"),
        ("", "The value of `devices` has '', but each device must be"),
        ("0,cuda:0", "lists 'cuda:0' twice; to run several trials on one device use trials_per_device"),
        (7, "The value of `devices` is 7, but must be a string such as '0,1' or a list of device names"),
    ],
)
def test_bad_devices_say_what_was_given_and_what_is_allowed(given, message):
    with pytest.raises(OptionError) as caught:
        parse_devices(given)
    assert message in str(caught.value)


SLOTS = """
import json
from hbmagic.devices import make_slots, parse_devices
cases = [(None, None, 1), (None, None, 2), (None, 3, 1), (None, 5, 1), ("1", None, 3), ("cpu", None, 1),
         ("cpu", 3, 1), ("0,cpu", None, 1)]
print(json.dumps([[s.device + "|" + s.label for s in make_slots(parse_devices(d), w, k)] for d, w, k in cases]))
"""


def test_slots_pack_trials_per_device_round_robin():
    """Two GPUs seen through CUDA_VISIBLE_DEVICES; K trials per device; workers sets the number of slots."""
    got = fresh(SLOTS, {"CUDA_VISIBLE_DEVICES": "2,3"}, "/nonexistent")
    assert got == [
        ["cuda:0|cuda:0 #0", "cuda:1|cuda:1 #1"],
        ["cuda:0|cuda:0 #0", "cuda:1|cuda:1 #1", "cuda:0|cuda:0 #2", "cuda:1|cuda:1 #3"],
        ["cuda:0|cuda:0 #0", "cuda:1|cuda:1 #1", "cuda:0|cuda:0 #2"],
        ["cuda:0|cuda:0 #0", "cuda:1|cuda:1 #1", "cuda:0|cuda:0 #2", "cuda:1|cuda:1 #3", "cuda:0|cuda:0 #4"],
        ["cuda:1|cuda:1 #0", "cuda:1|cuda:1 #1", "cuda:1|cuda:1 #2"],
        ["cpu|cpu #0"],
        ["cpu|cpu #0", "cpu|cpu #1", "cpu|cpu #2"],
        ["cuda:0|cuda:0 #0", "cpu|cpu #1"],
    ]


def test_without_a_gpu_n_cpu_slots_stand_in():
    if HAS_GPU:
        pytest.skip("this machine has a GPU")
    assert [s.label for s in make_slots(None, 3)] == ["cpu #0", "cpu #1", "cpu #2"]
    assert [s.device for s in make_slots(None, None)] == ["cpu"]


def test_a_gpu_that_is_not_visible_is_refused_before_anything_runs():
    visible = discover_gpus()
    with pytest.raises(OptionError) as caught:
        tune(lambda t: 0.0, {"x": "uniform(0, 1)"}, max_budget=3, executor="threads", devices="cuda:63")
    message = str(caught.value)
    assert "The value of `devices` has 'cuda:63', but the visible GPUs are:" in message
    assert (", ".join(visible) if visible else "none") in message


def test_a_worker_is_pinned_to_its_device(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pin("cuda:2") == "2" and pin("cpu") == "-1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5, 7")
    assert pin("cuda:0") == "5" and pin("cuda:1") == "7"
    with pytest.raises(OptionError, match=r"device 'cuda:2' is not among the 2 GPU\(s\) of CUDA_VISIBLE_DEVICES"):
        pin("cuda:2")


# -- on a real GPU ---------------------------------------------------------------------------

GPU_CELL = """
import os, torch

def objective(trial):
    st = trial.state
    assert trial.device == "cuda:0" and torch.cuda.current_device() == 0
    assert os.environ["CUDA_VISIBLE_DEVICES"] not in ("", "-1")
    if not st:
        st["w"] = torch.ones(1024, device=trial.device)
    assert st["w"].device == torch.device("cuda:0")  # the state came back onto the worker's GPU
    st["w"] += 1
    if trial.id == 0 and trial.rung == 0:
        torch.empty(10**15, dtype=torch.uint8, device=trial.device)  # a petabyte: out of memory
    trial.report(float(st["w"][0]) * trial.config["x"])
"""


@gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_processes_on_real_gpus_see_cuda0_and_report_out_of_memory():
    pytest.importorskip("torch")
    from hbmagic.events import EvaluationEnded, EvaluationStarted

    namespace = {"__name__": "__main__"}
    exec(textwrap.dedent(GPU_CELL), namespace)
    events = []
    result = tune(
        namespace["objective"],
        {"x": "uniform(0, 1)"},
        max_budget=9,
        seed=0,
        executor="processes",
        trials_per_device=2,
        observers=[events.append],
    )
    assert result.complete
    gpus = set(discover_gpus())
    assert {e.device for e in events if isinstance(e, EvaluationStarted)} == gpus
    failed = [e for e in events if isinstance(e, EvaluationEnded) and e.error]
    assert [e.trial for e in failed] == [0]
    assert failed[0].error.startswith("out of memory on cuda:")
    assert " at budget 1\n" in failed[0].error.splitlines()[0] + "\n"


@gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_real_discovery_agrees_with_torch():
    torch = pytest.importorskip("torch")
    assert fresh(DISCOVER)[0] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
