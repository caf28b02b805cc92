"""Fixtures for the magic's tests: the real IPython shell (``globalipapp``) with hbmagic loaded."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.testing import globalipapp


@pytest.fixture(scope="session")
def shell():
    """One real IPython shell for the whole session, with ``%load_ext hbmagic`` done."""
    # The first start returns nothing; afterwards the module's get_ipython is the shell's own.
    globalipapp.start_ipython()
    ip = globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "hbmagic")
    return ip


@pytest.fixture
def ip(shell):
    """The shell; names a test adds to the notebook namespace are removed afterwards."""
    before = {name: value for name, value in shell.user_ns.items()}
    yield shell
    for name in list(shell.user_ns):
        if name not in before:
            del shell.user_ns[name]
        elif shell.user_ns[name] is not before[name]:
            shell.user_ns[name] = before[name]


@pytest.fixture(autouse=True)
def studies(tmp_path, monkeypatch):
    """A fresh study storage for every test, so no test resumes another's study."""
    folder = tmp_path / "studies"
    monkeypatch.setenv("HBMAGIC_DIR", str(folder))
    return folder


class Cells:
    """Runs ``%%hyperband`` cells in the shell."""

    def __init__(self, ip):
        self.ip = ip

    def run(self, line: str, body: str) -> None:
        """Run ``%%hyperband line`` over ``body`` as IPython does for a cell (a UsageError is raised)."""
        self.ip.run_cell_magic("hyperband", line, body)

    def refused(self, line: str, body: str) -> str:
        """The UsageError's message for a cell that must be refused."""
        with pytest.raises(UsageError) as caught:
            self.run(line, body)
        return str(caught.value)


@pytest.fixture
def cells(ip):
    return Cells(ip)
