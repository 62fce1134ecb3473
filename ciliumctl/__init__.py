"""ciliumctl: eBPF networking and security for Kubernetes nodes."""

__version__ = "0.1.0"
