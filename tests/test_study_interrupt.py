"""Ctrl-C and SIGTERM stop a 2-worker reward-hacking study within seconds, leave no process behind and keep the
finished seeds' results; the study reports progress inside its stages (issue 26, item 4)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_study_presets import TINY  # the tiny study's sizes


REPO = Path(__file__).resolve().parents[1]


def descendants(pid: int) -> set[int]:
    """Every living process below `pid` (children, their children, ...), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_two_worker_study_stops_every_process_and_keeps_finished_seeds(signum, tmp_path):
    overrides = {
        **TINY,
        "preset": "dataset-bias",
        "seeds": [0, 1, 2, 3],
        "num_workers": 2,
        "rm_variants": ["base"],
        "policy_methods": ["DiffRO"],
        "beta_sweep": [],
        "policy_steps": 4,
        "output_dir": str(tmp_path / "study"),
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    recipe = tmp_path / "study.yaml"
    recipe.write_text(yaml.safe_dump(overrides))
    log = open(tmp_path / "log.txt", "w")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "reward_hacking_study.py"), "--config", str(recipe)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # A terminal's study has Ctrl-C's default; one started in the background (`cmd &`, nohup) inherits SIGINT
        # ignored, and so would this test's study if pytest was started that way.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seeds = tmp_path / "study" / "seeds"
    try:
        deadline = time.monotonic() + 600
        while not (seeds.is_dir() and any(seeds.iterdir())) and process.poll() is None:
            assert time.monotonic() < deadline, "no seed finished in 10 minutes"
            time.sleep(0.5)
        assert process.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
        time.sleep(1.0)  # the next seeds have started
        workers = descendants(process.pid)
        assert workers, "the study runs its seeds in worker processes"
        finished = sorted(path.name for path in seeds.iterdir())
        start = time.monotonic()
        process.send_signal(signum)
        if signum == signal.SIGINT:  # a terminal's Ctrl-C reaches the whole process group
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        returncode = process.wait(timeout=30)
        stopped_in = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    output = (tmp_path / "log.txt").read_text()
    assert returncode == 130, output[-3000:]
    assert stopped_in < 10, f"{stopped_in:.1f} s"
    time.sleep(0.5)
    assert [pid for pid in workers if alive(pid)] == [], "a worker outlived the study"
    assert "Interrupted" in output and str(seeds) in output
    kept = sorted(path.name for path in seeds.iterdir())
    assert set(finished) <= set(kept) and len(kept) < 4  # finished seeds kept, the queued ones never ran
    for name in kept:
        result = json.loads((seeds / name).read_text())
        assert f"seed{result['seed']}.json" == name and "policies" in result
    # progress inside the stages, not only per seed
    assert "[seed0] sft: step" in output and "[seed0] rm_base: step" in output
