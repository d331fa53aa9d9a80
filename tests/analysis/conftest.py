"""The checkpoint fixtures these tests share with the other run-level tests."""

from tests.checkpoint_fixtures import splits

__all__ = ["splits"]
