"""scripts/fault_matrix.py, the README's reliability table: one group runs and passes (the
whole matrix, ~7 minutes, is run by hand: python scripts/fault_matrix.py; every case is also
a test of its own in tests/)."""

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow  # its materials and 3 cases: 5 subprocesses
def test_the_exports_group_of_the_fault_matrix_passes():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fault_matrix.py"), "--only", "exports"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.endswith("\n3/3 cases pass\n"), result.stdout
    assert "FAIL" not in result.stdout


def test_an_unknown_group_is_refused_naming_the_groups():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fault_matrix.py"), "--only", "weigths"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(
        "unknown group(s) ['weigths']; choose from weights, exports, config, workdir, signals, "
        "data, eval, backbones"
    )
