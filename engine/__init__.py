"""Orchestration: schemas, validation, state, devices, pipelines and I/O."""
