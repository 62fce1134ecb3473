"""Cluster mode: manifests and install, policy apply against the API server, list+watch, cluster-wide
identities (CiliumIdentity), CiliumEndpoints, the Valid condition, and the per-node sync the agent runs."""
