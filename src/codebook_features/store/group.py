"""The processes of a data-parallel recording (``torchrun`` or ``accelerate launch``).

Process ``r`` of ``w`` records documents ``r, r + w, ...`` into its own shards (``rank`` in
their names), so no two processes ever write the same file; they meet only at barriers.
"""

from __future__ import annotations

import os
from datetime import timedelta

from codebook_features.codebook.distributed import is_distributed
from codebook_features.errors import CodebookError


class ProcessGroup:
    """The processes of a data-parallel recording (one process: no-ops)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.started = False
        if is_distributed():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_available():
                raise CodebookError("this torch build cannot run several processes")
            dist.init_process_group("gloo", timeout=timedelta(hours=12))
            self.started = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world = 0, 1

    def barrier(self) -> None:
        """Wait for every process (a no-op when recording alone)."""
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        """End the process group, if this recording started it."""
        if self.started:
            self.dist.destroy_process_group()
