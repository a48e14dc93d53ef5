"""A stack's plan moved onto hosts: each endpoint a service binds goes to its host's address.

`plan_stack` plans one machine: every endpoint is `127.0.0.1:<port>`. On several hosts (the
namespace network of `services.chaos.netns`), the sink and the controller bind on their own
host's address, and every service that connects to them is told that address instead. Nothing
sets a replay address: each node finds the one its peers reach (`services.addresses`).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.stack import StackPlan

#: The settings naming what each service binds.
BINDS = {
    "sink": ("LEYLINE_SINK_INTAKE",),
    "controller": ("LEYLINE_CONTROLLER_COMMANDS", "LEYLINE_CONTROLLER_INTAKE"),
}
_LOOPBACK = "127.0.0.1"


def _endpoint(value: str) -> str:
    return value.split("@", 1)[-1].removeprefix("tcp://")


def on_hosts(plan: StackPlan, addresses: Mapping[str, str]) -> StackPlan:
    """`plan` with the endpoints each service binds on its host's address (`addresses`:
    service -> the address of its host), in every service's settings."""
    moved: dict[str, str] = {}  # 127.0.0.1:port -> host address:port
    for name, _, env in plan.services:
        for key in BINDS.get(name, ()):
            endpoint = _endpoint(env[key])
            moved[endpoint] = endpoint.replace(_LOOPBACK, addresses[name])
    services = []
    for name, command, env in plan.services:
        settings = {}
        for key, value in env.items():
            for old, new in moved.items():
                value = value.replace(old, new)
            settings[key] = value
        services.append((name, command, settings))
    return StackPlan(plan.data_dir, tuple(services), plan.created_keys)
