"""A model asset trained on two ranks: the step launches ``torchrun`` through Dagster Pipes on the stored split
its lineage names, rank 0's epoch lines reach the run's log, and the model it writes is the one versioned."""

from __future__ import annotations

import dagster as dg
import pytest

from orchestration.resources import DatasetResource
from recmodels.models import Recommender

SELECTION = ["raw_interactions", "validated_interactions", "quarantined_rows", "interactions", "split"]
SMALL = {"trainer": {"epochs": 2}, "backbone": {"dim": 16, "max_len": 20}}


@pytest.fixture(scope="module")
def materialised(tmp_path_factory, earliest_ml100k, materialise_batch):
    data = earliest_ml100k("ml-100k-ranks", 0.25)
    root = tmp_path_factory.mktemp("project")
    dataset = DatasetResource(data_dir=str(data.parent), dataset=data.name)
    instance = dg.DagsterInstance.ephemeral()
    materialise_batch(root, dataset, selection=SELECTION, instance=instance)
    result = materialise_batch(
        root,
        dataset,
        selection=["esasrec_model"],
        instance=instance,
        run_config=dg.RunConfig(ops={"esasrec_model": {"config": SMALL | {"ranks": 2}}}),
    )
    return root, result, instance


def test_the_asset_trains_on_two_ranks_through_pipes_and_versions_what_rank_0_wrote(materialised):
    root, result, instance = materialised
    [event] = result.get_asset_materialization_events()
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["ranks"].value == 2
    assert metadata["epochs"].value == 2
    model = Recommender.load(root / metadata["path"].value)
    assert model.config.backbone.dim == 16
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("trained on 2 ranks" in message for message in messages)
    assert sum("epoch" in message and "valid" in message for message in messages) == 2  # rank 0's lines only


def test_a_family_without_torch_has_no_ranks_setting():
    from orchestration.assets.models import MODEL_SPECS, model_launchpad_config

    fields = {spec.asset: set(model_launchpad_config(spec).model_fields) for spec in MODEL_SPECS}
    assert "ranks" not in fields["ease_model"]
    assert "ranks" in fields["esasrec_model"] and "ranks" in fields["diffrec_model"]
