"""Model families; importing this package registers every family for ``Recommender.load``."""

from recmodels.models import baselines, sasrec
from recmodels.models.base import HistoryBatch, ModelConfig, Recommender, model_family

__all__ = ["HistoryBatch", "ModelConfig", "Recommender", "baselines", "model_family", "sasrec"]
