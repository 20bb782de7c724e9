"""The UI-free core: model registry, model sources, the manager that runs generations."""
