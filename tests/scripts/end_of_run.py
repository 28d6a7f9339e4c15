"""Launched by tests/test_end_distributed_run.py: the main process is still busy after the last collective (as when
it writes a ZeRO-3 model's gathered weights) while the other process is done. Each process records when it left
`end_distributed_run` and whether its process group was torn down."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from rrpo_hf.script_utils import end_distributed_run


def main(output_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    total = torch.ones(1)
    dist.all_reduce(total)
    main_process_done = None
    if rank == 0:
        time.sleep(2.0)
        main_process_done = time.time()
    end_distributed_run()
    record = {"left": time.time(), "main_process_done": main_process_done, "initialized": dist.is_initialized()}
    (output_dir / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
