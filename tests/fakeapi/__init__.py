"""A small in-process fake Kubernetes API server: a test double for cluster-mode code (never product code)."""

from .server import FakeApiServer
from .store import ApiError, ResourceType, Store

__all__ = ["FakeApiServer", "ApiError", "ResourceType", "Store"]
