"""Dataset reading (many layouts -> one canonical table) and row-level validation."""

from recmodels.data.readers import (
    ColumnMap,
    DataFormatError,
    RawDataset,
    load_dataset,
    read_movielens_zip,
    read_predefined,
    read_recbole,
    read_sequences,
    read_table,
)
from recmodels.data.schemas import (
    ValidationResult,
    ValidationRules,
    interactions_schema,
    items_schema,
    validate_interactions,
    validate_items,
)

__all__ = [
    "ColumnMap",
    "DataFormatError",
    "RawDataset",
    "ValidationResult",
    "ValidationRules",
    "interactions_schema",
    "items_schema",
    "load_dataset",
    "read_movielens_zip",
    "read_predefined",
    "read_recbole",
    "read_sequences",
    "read_table",
    "validate_interactions",
    "validate_items",
]
