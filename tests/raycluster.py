"""A real Ray cluster of several nodes on this machine, for the ``backend: ray`` tests.

Started by the ``ray_cluster`` session fixture (``tests/conftest.py``) with ``ray.cluster_utils.Cluster``:
a head node and more nodes, each a real raylet with its own CPU (and logical GPU) resources, all
on 127.0.0.1 (see ../shared/FACTS.md: the node address, telemetry and token settings below keep every
listener on loopback and nothing under the home folder). The test process never connects to it as a
driver: jobs do, through ``ray_address``, with :attr:`RayCluster.env` in their environment.

Only what this fixture started is stopped (never ``ray stop``, which kills every Ray process on
the host by name).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

# before ray is imported, here and in every process that talks to the cluster
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
}
# processes of a node that are Ray's own, not actors
NOT_ACTORS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")
NODE_ARGS = {"node_ip_address": "127.0.0.1", "include_dashboard": False}


@dataclass
class RayCluster:
    """A running test cluster: ``address`` for ``ray_address``, ``env`` for the commands that use it."""

    cluster: Any
    env: dict[str, str]
    nodes: list[Any] = field(default_factory=list)  # ray's Node objects, head first

    @property
    def address(self) -> str:
        """The GCS address, ``127.0.0.1:<port>`` (what ``ray_address`` takes)."""
        return self.cluster.address

    @classmethod
    def start(cls, nodes: int = 2, cpus: float = 1, gpus: float = 1) -> RayCluster:
        """A head and ``nodes - 1`` more nodes, each with ``cpus`` CPUs and ``gpus`` logical GPUs."""
        # Ray reads RAY_AUTH_MODE when first imported: imported before, this process would talk to its
        # own cluster without the token (tests check for ray with importlib.util.find_spec, not import)
        assert "ray" not in sys.modules, "import ray only after RayCluster.start() (it reads RAY_AUTH_MODE then)"
        env = {**RAY_ENV, "RAY_AUTH_TOKEN": secrets.token_hex(16)}
        os.environ.update(env)  # the raylets and their workers inherit it
        from ray.cluster_utils import Cluster

        args = {**NODE_ARGS, "num_cpus": cpus, "num_gpus": gpus}
        cluster = Cluster(initialize_head=True, head_node_args=args, connect=False)
        started = cls(cluster, env, [cluster.head_node])
        for _ in range(nodes - 1):
            started.add_node(cpus, gpus)
        cluster.wait_for_nodes()
        return started

    def add_node(self, cpus: float = 1, gpus: float = 1) -> Any:
        """One more node (a raylet of its own), returned for :meth:`remove_node`."""
        node = self.cluster.add_node(**NODE_ARGS, num_cpus=cpus, num_gpus=gpus)
        self.nodes.append(node)
        return node

    def remove_node(self, node: Any) -> None:
        """Kill a node that is not the head: its raylet and every worker on it (a lost machine)."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.nodes.remove(node)

    def actor_processes(self) -> list[psutil.Process]:
        """Worker processes of this cluster that hold an actor now (``ray::<Class>``, not ``ray::IDLE``)."""
        raylets = {node.all_processes["raylet"][0].process.pid for node in self.nodes}
        found = []
        for raylet in raylets:
            try:
                children = psutil.Process(raylet).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for proc in children:
                try:
                    title = (proc.cmdline() or [""])[0]
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
                if title.startswith("ray::") and not title.startswith(NOT_ACTORS):
                    found.append(proc)
        return found

    def wait_no_actors(self, within_s: float = 10.0) -> list[str]:
        """Wait until no actor is alive on the cluster; what is still alive after ``within_s`` (empty: none)."""
        deadline = time.monotonic() + within_s
        while (left := self.actor_processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        described = []
        for proc in left:
            try:
                described.append(f"{proc.pid} {proc.cmdline()[0]}")
            except psutil.Error:
                pass
        return described

    def stop(self) -> None:
        """Stop every node this fixture started (and only those)."""
        self.cluster.shutdown()
