"""Every launched script ends with `end_distributed_run`: no process exits while another still works.

A process that exits with its gloo process group alive while a peer is busy can abort
(`terminate called without an active exception`, SIGABRT) and the launcher then kills the peer: a ZeRO-3 run of
examples/train_rm.py failed this way after its weights were written.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rrpo_hf.script_utils import end_distributed_run


REPO = Path(__file__).resolve().parents[1]
LAUNCHED_SCRIPTS = [
    REPO / "examples" / "train_rm.py",
    REPO / "examples" / "sft.py",
    REPO / "examples" / "rrpo.py",
    REPO / "tests" / "scripts" / "diffro_smoke.py",
    REPO / "tests" / "scripts" / "diffro_zero3_paths.py",
]


def test_is_a_no_op_without_a_process_group():
    end_distributed_run()


@pytest.mark.parametrize("script", LAUNCHED_SCRIPTS, ids=lambda path: path.name)
def test_every_launched_script_ends_the_run(script):
    tree = ast.parse(script.read_text())
    main_blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)
    ]
    assert main_blocks, f"{script.name} has no `if __name__ == '__main__':` block"
    last = main_blocks[-1].body[-1]
    # Either directly, or through `run_script`, which ends the run after `main` returns (checked below).
    assert isinstance(last, ast.Expr) and (
        ast.unparse(last.value) == "end_distributed_run()" or ast.unparse(last.value).startswith("run_script(")
    ), f"{script.name} must call end_distributed_run() last"


def test_run_script_ends_the_distributed_run_after_main():
    from rrpo_hf import script_utils

    calls = []
    original = script_utils.end_distributed_run
    script_utils.end_distributed_run = lambda: calls.append("end")
    try:
        script_utils.run_script(lambda: ("x",), lambda value: calls.append(value))
    finally:
        script_utils.end_distributed_run = original
    assert calls == ["x", "end"]


@pytest.mark.slow
def test_the_done_process_waits_for_the_busy_one_and_the_group_is_torn_down(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests" / "scripts" / "end_of_run.py"), str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    main_process = json.loads((tmp_path / "rank0.json").read_text())
    other = json.loads((tmp_path / "rank1.json").read_text())
    assert other["left"] >= main_process["main_process_done"]
    assert not main_process["initialized"] and not other["initialized"]
