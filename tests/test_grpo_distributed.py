"""`CosyVoiceGRPOTrainer` under `accelerate launch` with 2 CPU processes and DeepSpeed ZeRO-2 / ZeRO-3: generation
with gathered parameters, the KL reference, the robust RM's reward; the checks run in `tests/scripts/grpo_smoke.py`."""

import pytest
from test_diffro_distributed import REPO, launch


@pytest.mark.slow
@pytest.mark.parametrize("config", ["cpu_zero2.yaml", "cpu_zero3.yaml"])
def test_grpo_trains_under_deepspeed_on_two_processes(tmp_path, config):
    summary = launch(config, tmp_path, script=REPO / "tests" / "scripts" / "grpo_smoke.py")
    assert summary["num_processes"] == 2 and "DEEPSPEED" in summary["distributed_type"]
    assert len(summary["losses"]) == 2 and len(summary["kl"]) == 2 and summary["moved"] > 0
