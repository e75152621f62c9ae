"""Shared fixtures: Flower messages outside a running app need a task identity."""

import pytest
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture
def flower_task():
    """Lets tests build Flower Messages as a ServerApp would (run, node and task ids set)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None
