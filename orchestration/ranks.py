"""What a model asset's distributed step runs under ``torchrun``: ``recmodels.launch`` with rank 0 reporting to
the Dagster run through Pipes (its epoch lines to the run's log, the training figures as a message). The
ranks import dagster-pipes only, not dagster.

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m orchestration.ranks <recmodels.launch arguments>
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack

from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from recmodels import launch
from recmodels.distributed import current_world


class _PipesLogHandler(logging.Handler):
    """The trainer's epoch lines, forwarded to the Dagster run's log."""

    def __init__(self, pipes) -> None:
        super().__init__(logging.INFO)
        self.pipes = pipes

    def emit(self, record: logging.LogRecord) -> None:
        self.pipes.log.info(self.format(record))


def main() -> None:
    with ExitStack() as stack:
        pipes = None
        if current_world().is_main and PipesEnvVarParamsLoader().is_dagster_pipes_process():
            pipes = stack.enter_context(open_dagster_pipes())
            logging.getLogger("recmodels.train").addHandler(_PipesLogHandler(pipes))
        out = launch.main()
        if pipes is not None:
            record = json.loads((out / launch.TRAINING_FILE).read_text())
            pipes.report_custom_message({"ranks": record["ranks"], "seconds": record["seconds"]})


if __name__ == "__main__":
    main()
