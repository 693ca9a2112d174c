"""The instance concurrency of orchestration/dagster.yaml, on real instances built from that file (SQLite and
PostgreSQL storage, the ``project_instance`` fixture): the "training" pool caps training steps across the
executor's parallelism, and the run queue lets at most one retrain per model and one batch pipeline run at a
time."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.utils import make_new_run_id
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

INSTANCE_YAML = Path(__file__).resolve().parents[2] / "orchestration" / "dagster.yaml"
TRAINING_POOL = "training"
SLEEP_SECONDS = 2.0
EXECUTOR_STEPS = 3  # more than the pool's limit, so the pool (not the executor) is what holds steps back


def _sleeping_training(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, pool=TRAINING_POOL)
    def training() -> None:
        time.sleep(SLEEP_SECONDS)

    return training


trainings_job = dg.define_asset_job(
    "trainings",
    executor_def=dg.multiprocess_executor.configured(
        # spawn, not the pipeline's forkserver: a forkserver keeps the environment of the first test that
        # started it, and the PostgreSQL instance's steps read DAGSTER_PG_* from theirs
        {"max_concurrent": EXECUTOR_STEPS, "start_method": {"spawn": {}}}
    ),
)
trainings_definitions = dg.Definitions(
    assets=[_sleeping_training(f"training_{index}") for index in range(EXECUTOR_STEPS)], jobs=[trainings_job]
)


def get_trainings_job() -> dg.JobDefinition:
    return trainings_definitions.resolve_job_def("trainings")


def _reconstructable_trainings_job() -> dg.ReconstructableJob:
    """The job as each step's process rebuilds it: this module imported by name from its own folder (the
    folder pytest puts on sys.path, which the step processes do not inherit)."""
    return dg.build_reconstructable_job(
        __name__, get_trainings_job.__name__, reconstructor_working_directory=str(Path(__file__).parent)
    )


def _most_steps_running_at_once(instance: dg.DagsterInstance, run_id: str) -> int:
    """The largest number of steps between their STEP_START and STEP_SUCCESS at one moment."""
    changes = []
    for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}):
        changes.append((entry.timestamp, 1 if entry.dagster_event_type == dg.DagsterEventType.STEP_START else -1))
    assert sum(change == 1 for _, change in changes) == EXECUTOR_STEPS
    running = most = 0
    for _, change in sorted(changes, key=lambda item: (item[0], item[1])):  # an end before a start at a tie
        running += change
        most = max(most, running)
    return most


@pytest.mark.timeout(180)  # a step process that dies keeps its slot, and the run would wait for it forever
def test_training_pool_caps_concurrent_trainings_below_the_executor_limit(project_instance):
    pool_limit = project_instance.global_op_concurrency_default_limit
    assert pool_limit is not None and 1 <= pool_limit < EXECUTOR_STEPS

    with dg.execute_job(_reconstructable_trainings_job(), instance=project_instance) as result:
        assert result.success
        run_id = result.run_id
    assert _most_steps_running_at_once(project_instance, run_id) == pool_limit
    assert {pool.name: pool.limit for pool in project_instance.event_log_storage.get_pool_limits()} == {
        TRAINING_POOL: pool_limit
    }

    # the documented per-machine override: `dagster instance concurrency set training 1`
    project_instance.event_log_storage.set_concurrency_slots(TRAINING_POOL, 1)
    with dg.execute_job(_reconstructable_trainings_job(), instance=project_instance) as result:
        assert result.success
        run_id = result.run_id
    assert _most_steps_running_at_once(project_instance, run_id) == 1


def test_run_queue_starts_one_retrain_per_model_and_one_batch_pipeline(project_instance):
    location = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("orchestration.definitions"), "__repository__")

    def run(status: DagsterRunStatus, **tags: str) -> str:
        """A run as a sensor, schedule or the UI submits it (QUEUED) or as the daemon has launched it."""
        dagster_run = dg.DagsterRun(
            job_name="retrain",
            run_id=make_new_run_id(),
            status=status,
            tags=tags,
            remote_job_origin=RemoteJobOrigin(repository_origin=location, job_name="retrain"),
        )
        return project_instance.add_run(dagster_run).run_id

    run(DagsterRunStatus.STARTED, **{"recpipe/model": "ease_model"})
    waiting_ease = run(DagsterRunStatus.QUEUED, **{"recpipe/model": "ease_model"})
    first_sasrec = run(DagsterRunStatus.QUEUED, **{"recpipe/model": "esasrec_model"})
    second_sasrec = run(DagsterRunStatus.QUEUED, **{"recpipe/model": "esasrec_model"})
    first_batch = run(DagsterRunStatus.QUEUED, **{"recpipe/pipeline": "batch"})
    second_batch = run(DagsterRunStatus.QUEUED, **{"recpipe/pipeline": "batch"})
    untagged = run(DagsterRunStatus.QUEUED)

    # the queue daemon's own choice of the runs to launch on its next tick
    dequeued = QueuedRunCoordinatorDaemon(interval_seconds=1)._get_runs_to_dequeue(
        project_instance, project_instance.get_concurrency_config(), fixed_iteration_time=None
    )
    launched = [dagster_run.run_id for dagster_run in dequeued]
    assert not {waiting_ease, second_sasrec, second_batch} & set(launched)
    # the eligible runs in queue order, as many as max_concurrent_runs leaves beside the running retrain
    free = yaml.safe_load(INSTANCE_YAML.read_text())["concurrency"]["runs"]["max_concurrent_runs"] - 1
    assert launched == [first_sasrec, first_batch, untagged][:free]


def test_make_run_frees_the_slots_a_killed_run_left_claimed(project_instance):
    from orchestration.slots import free_slots_of_finished_runs

    storage = project_instance.event_log_storage
    storage.set_concurrency_slots(TRAINING_POOL, 3)
    killed, vanished, live = (make_new_run_id() for _ in range(3))
    for run_id, status in ((killed, DagsterRunStatus.FAILURE), (live, DagsterRunStatus.STARTED)):
        project_instance.add_run(
            dg.DagsterRun(job_name="full_pipeline", run_id=run_id, status=status)  # as the instance records them
        )
    for run_id in (killed, vanished, live):
        assert storage.claim_concurrency_slot(TRAINING_POOL, run_id, f"step-of-{run_id}").is_claimed
    assert free_slots_of_finished_runs(project_instance) == sorted([killed, vanished])
    assert set(storage.get_concurrency_run_ids()) == {live}  # a running run keeps its slot
