"""Policies the tests apply, written as a user writes them (block YAML, quoted ports), from one builder so that
each test says only what differs: the name, whom it selects, whom it lets in, on which port."""

from __future__ import annotations


def _labels(labels: dict[str, str], indent: int) -> str:
    return "".join(f"{' ' * indent}{k}: {v}\n" for k, v in labels.items())


def allow_ingress(name: str, selector: dict[str, str], from_labels: dict[str, str], port: int | None = None,
                  namespace: str | None = None, protocol: str = "TCP") -> str:
    """A CiliumNetworkPolicy: endpoints matching `selector` accept traffic from endpoints matching `from_labels`
    (on `port`/`protocol` when a port is given)."""
    text = ("apiVersion: cilium.io/v2\n"
            "kind: CiliumNetworkPolicy\n"
            "metadata:\n"
            f"  name: {name}\n"
            + (f"  namespace: {namespace}\n" if namespace else "")
            + "spec:\n"
            "  endpointSelector:\n"
            "    matchLabels:\n"
            + _labels(selector, 6)
            + "  ingress:\n"
            "  - fromEndpoints:\n"
            "    - matchLabels:\n"
            + _labels(from_labels, 8))
    if port is not None:
        text += ("    toPorts:\n"
                 "    - ports:\n"
                 f'      - port: "{port}"\n'
                 f"        protocol: {protocol}\n")
    return text
