"""Model families; importing this package registers every family for ``Recommender.load``."""

from recmodels.models import baselines, diffrec, efficientrec, multimodal, sasrec
from recmodels.models.base import HistoryBatch, ModelConfig, Recommender, model_family

__all__ = [
    "HistoryBatch",
    "ModelConfig",
    "Recommender",
    "baselines",
    "diffrec",
    "efficientrec",
    "model_family",
    "multimodal",
    "sasrec",
]
