"""A small in-process fake Kubernetes API server: a test double for cluster-mode code (never product code)."""

from .server import FakeApiServer, in_netns
from .store import ApiError, ResourceType, Store

__all__ = ["FakeApiServer", "in_netns", "ApiError", "ResourceType", "Store"]
