"""Tests on a real Kubernetes cluster built on this machine (cluster.py)."""
