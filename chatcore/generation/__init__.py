"""Running models: the registry (models.yaml), where weights are, loading and unloading within the memory budget, the fair line and CPU share, and one reply's stream."""
