"""Free the pool slots that runs which no longer execute still hold.

A run killed mid-step (Ctrl-C on ``make run``) keeps its ``training`` slots claimed; with no
daemon to reclaim them (``make run`` has none, ``make ui`` frees them after 30 s), the next run
would wait for them forever. ``make run`` calls ``python -m orchestration.slots`` first.
"""

import dagster as dg


def free_slots_of_finished_runs(instance: dg.DagsterInstance) -> list[str]:
    """Release every slot held by a run that has finished or no longer exists; returns those run ids."""
    storage = instance.event_log_storage
    freed = []
    for run_id in sorted(storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    return freed


if __name__ == "__main__":
    with dg.DagsterInstance.get() as current:
        for run_id in free_slots_of_finished_runs(current):
            print(f"freed the pool slots still held by finished run {run_id}")
