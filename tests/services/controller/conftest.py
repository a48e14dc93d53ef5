"""Fixtures for the controller's decision core: the CNN action layout and a signal builder."""

from __future__ import annotations

import pytest
from controller_signals import SignalFactory, make_signal

from services.controller import ActionLayout


@pytest.fixture
def layout() -> ActionLayout:
    return ActionLayout("cnn")


@pytest.fixture
def signal() -> SignalFactory:
    return make_signal
