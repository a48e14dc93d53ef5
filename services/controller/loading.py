"""Choosing the controller's policy by name: a built-in, your own by import path, or a file.

- `heuristic`: the spec's rules; `mlp`: `MlpPolicy` from its checkpoint.
- `package.module:name`: `name` is a factory or class called with the topology's
  `ActionLayout`, returning an `nn.Module`; `checkpoint`, when given, is a state_dict for it.
- `module`: `checkpoint` is a whole `torch.save`'d module (unpickled: load only your own files).

A module that is not a `ControlPolicy` is wrapped in `ModulePolicy`. Every policy but the two
built-ins is probed once before it is used, so a bad one is a one-line error at start-up.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.controller.heuristic import HeuristicPolicy
from services.controller.layout import ActionLayout
from services.controller.mlp import MlpPolicy
from services.controller.module_policy import ModulePolicy, PolicyError, probe_policy
from services.controller.policy import ControlPolicy


def import_object(path: str) -> Any:
    """The object `package.module:attribute.path` names; a PolicyError saying what is missing.

    The working directory is searched last, as `python -m` (how the stack starts services)
    searches it, so a policy beside the user's files is found by `leyline up` and its
    controller alike.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise PolicyError(f"policy {path!r}: expected package.module:name")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise PolicyError(f"policy {path!r}: cannot import {module_name}: {error}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise PolicyError(f"policy {path!r}: {module_name} has no {attribute}") from None
    return found


def _checkpoint(name: str, checkpoint: str | None) -> Path:
    if checkpoint is None:
        raise PolicyError(f"policy {name!r} needs a checkpoint file (--checkpoint FILE)")
    path = Path(checkpoint)
    if not path.is_file():
        raise PolicyError(f"policy {name!r}: no checkpoint file {checkpoint}")
    return path


def _from_import_path(name: str, layout: ActionLayout, checkpoint: str | None) -> nn.Module:
    factory = import_object(name)
    if not callable(factory):
        raise PolicyError(f"policy {name!r} is a {type(factory).__name__}, not a factory")
    try:
        module = factory(layout)
    except Exception as error:
        raise PolicyError(
            f"policy {name!r} failed to build: {type(error).__name__}: {error}"
        ) from None
    if not isinstance(module, nn.Module):
        raise PolicyError(f"policy {name!r} built a {type(module).__name__}, not an nn.Module")
    if checkpoint is not None:
        path = _checkpoint(name, checkpoint)
        try:
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as error:
            raise PolicyError(
                f"policy {name!r}: cannot load {path} as its state_dict: {error}"
            ) from None
    return module


def _from_pickle(checkpoint: str | None) -> nn.Module:
    path = _checkpoint("module", checkpoint)
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise PolicyError(f"policy 'module': cannot load {path}: {error}") from None
    if not isinstance(module, nn.Module):
        raise PolicyError(f"policy 'module': {path} holds a {type(module).__name__}, not a module")
    return module


def load_policy(name: str, topology: str, checkpoint: str | None = None) -> ControlPolicy:
    """The policy `name` for `topology` (see the module docstring), ready for the loop."""
    layout = ActionLayout(topology)
    if name == "heuristic":
        return HeuristicPolicy(layout)
    if name == "mlp":
        return MlpPolicy.load(_checkpoint(name, checkpoint))
    module = (
        _from_pickle(checkpoint)
        if name == "module"
        else _from_import_path(name, layout, checkpoint)
    )
    if isinstance(module, ControlPolicy):
        if module.layout != layout:
            raise PolicyError(
                f"policy {name!r} decides {module.layout.names}, but topology {topology!r} "
                f"has {layout.names}"
            )
        policy = module
    else:
        policy = ModulePolicy(module, layout, name)
    policy.eval()
    probe_policy(policy, name)
    return policy
