"""Neural building blocks: transformer layers, sequence backbone, losses."""
