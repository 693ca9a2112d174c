"""Feature stage: the items' modalities (title embeddings, genres, year) that multi-modal models fuse."""

import dagster as dg
import numpy as np
from sklearn.decomposition import PCA

from orchestration.outputs import ValidatedRows
from orchestration.plots import inline_png, labelled_projection, rendered
from orchestration.resources import TextEncoderResource
from recmodels.data.splits import SplitData
from recmodels.features.modalities import ItemModalities

GROUP = "features"
PROJECTION_SEED = 0


@dg.asset(group_name=GROUP, kinds={"pytorch"})
def item_features(
    text_encoder: TextEncoderResource, split: SplitData, validated_interactions: ValidatedRows
) -> dg.Output[ItemModalities]:
    """Every catalogue item's modalities, aligned with the split's item ids: coverage per modality, embedding
    norms, and the titles' embeddings in 2-D coloured by first genre."""
    item_ids = split.train.item_ids
    modalities = ItemModalities.from_items(
        validated_interactions.items, item_ids, text_encoder.encoder(), text_encoder.cache
    )
    metadata: dict[str, object] = {
        "items": split.n_items,
        "modalities": ", ".join(modalities.names) or "none (the dataset has no item table)",
        **{f"coverage_{name}": round(share, 4) for name, share in modalities.coverage().items()},
    }
    if modalities.text is not None:
        text = modalities.text
        norms = np.linalg.norm(text.vectors[text.present], axis=1)
        metadata |= {
            "text_fingerprint": text.fingerprint,
            "text_dim": int(text.vectors.shape[1]),
            "text_norm_min": round(float(norms.min()), 4),
            "text_norm_max": round(float(norms.max()), 4),
        }
        rows = np.flatnonzero(text.present)
        if len(rows) >= 2:
            points = PCA(n_components=2, random_state=PROJECTION_SEED).fit_transform(text.vectors[rows])
            labels = modalities.side.first_genres(rows) if modalities.side is not None else ["none"] * len(rows)
            chart = rendered(
                lambda path: labelled_projection(points, labels, path, "item titles (MiniLM), PCA", "first genre")
            )
            metadata["projection"] = dg.MetadataValue.md(inline_png(chart, "title embeddings in 2-D, by genre"))
    if modalities.side is not None:
        metadata["genres"] = len(modalities.side.vocabulary)
    return dg.Output(modalities, metadata=metadata)
