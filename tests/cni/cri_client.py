"""A small CRI client (runtime.v1 over gRPC): the calls kubelet makes to bring a pod up and down."""

from __future__ import annotations

import uuid

import cri_api_pb2 as api

TIMEOUT = 60


class CriClient:
    def version(self):
        return self.rt.Version(api.VersionRequest(version="v1"), timeout=TIMEOUT)

    def __init__(self, stub, cgroup_parent: str = ""):
        self.rt = stub
        self.cgroup_parent = cgroup_parent   # kubelet sets one per pod QoS class; the tests one per run

    def sandbox_config(self, name: str, namespace: str, annotations: dict | None = None,
                       labels: dict | None = None) -> api.PodSandboxConfig:
        return api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace=namespace, uid=str(uuid.uuid4()), attempt=0),
            hostname=name, labels=labels or {}, annotations=annotations or {},
            linux=api.LinuxPodSandboxConfig(
                cgroup_parent=self.cgroup_parent,
                security_context=api.LinuxSandboxSecurityContext(
                    namespace_options=api.NamespaceOption(network=api.POD, pid=api.CONTAINER, ipc=api.POD))))

    def run_pod(self, config: api.PodSandboxConfig) -> str:
        return self.rt.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=TIMEOUT).pod_sandbox_id

    def pod_ip(self, pod_id: str) -> str:
        st = self.rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=TIMEOUT)
        return st.status.network.ip

    def stop_pod(self, pod_id: str) -> None:
        self.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=TIMEOUT)

    def remove_pod(self, pod_id: str) -> None:
        self.rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=TIMEOUT)

    def list_pods(self) -> list:
        return list(self.rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=TIMEOUT).items)

    def start_container(self, pod_id: str, pod_config: api.PodSandboxConfig, name: str, image: str,
                        command: list[str]) -> str:
        cfg = api.ContainerConfig(metadata=api.ContainerMetadata(name=name), image=api.ImageSpec(image=image),
                                  command=command)
        cid = self.rt.CreateContainer(api.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg,
                                                                 sandbox_config=pod_config),
                                      timeout=TIMEOUT).container_id
        self.rt.StartContainer(api.StartContainerRequest(container_id=cid), timeout=TIMEOUT)
        return cid

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 10) -> tuple[int, str, str]:
        r = self.rt.ExecSync(api.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout),
                             timeout=timeout + 20)
        return r.exit_code, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def stop_container(self, container_id: str) -> None:
        self.rt.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=0), timeout=TIMEOUT)

    def remove_container(self, container_id: str) -> None:
        self.rt.RemoveContainer(api.RemoveContainerRequest(container_id=container_id), timeout=TIMEOUT)
