"""Service settings: precedence of sources, errors that name field and source, automatic flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import SocketOptions
from services.config import (
    SECTIONS,
    BusConfig,
    ConfigError,
    ControllerConfig,
    SinkConfig,
    StackConfig,
    WorkerConfig,
    add_config_file_flag,
    add_config_flags,
    config_from_args,
    load_config,
)


def write_toml(directory: Path, text: str) -> Path:
    path = directory / "leyline.toml"
    path.write_text(text)
    return path


def worker_flags(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_file_flag(parser)
    add_config_flags(parser, WorkerConfig, "worker")
    add_config_flags(parser, BusConfig, "bus")
    return parser.parse_args(argv)


def error_of(call: object) -> str:
    assert callable(call)
    with pytest.raises(ConfigError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_every_section_loads_its_defaults_from_an_empty_environment() -> None:
    for section, cls in SECTIONS.items():
        assert load_config(cls, section, env={}) == cls()


def test_default_endpoints_form_a_working_single_machine_stack() -> None:
    controller, sink, worker = ControllerConfig(), SinkConfig(), WorkerConfig()
    # Connect addresses name the identity whose key they pin; binds are plain addresses.
    assert worker.commands == f"controller@{controller.commands}"
    assert worker.intake == (f"controller@{controller.intake}", f"sink@{sink.intake}")
    assert controller.sink == f"sink@{sink.intake}"
    assert StackConfig().epochs == worker.epochs


@settings(max_examples=100, deadline=None)
@given(
    toml=st.none() | st.integers(1, 1000),
    env=st.none() | st.integers(1, 1000),
    flag=st.none() | st.integers(1, 1000),
)
def test_later_sources_win_defaults_then_toml_then_env_then_flags(
    tmp_path_factory: pytest.TempPathFactory, toml: int | None, env: int | None, flag: int | None
) -> None:
    directory = tmp_path_factory.mktemp("config")
    path = write_toml(directory, "" if toml is None else f"[worker]\nepochs = {toml}\n")
    environment = {} if env is None else {"LEYLINE_WORKER_EPOCHS": str(env)}
    flags = worker_flags([] if flag is None else ["--epochs", str(flag)])
    expected = next(v for v in (flag, env, toml, WorkerConfig().epochs) if v is not None)
    assert load_config(WorkerConfig, "worker", path, environment, flags).epochs == expected


def test_each_source_sets_only_its_own_fields(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[worker]\nid = "from-toml"\nseed = 7\n')
    env = {"LEYLINE_WORKER_SEED": "8", "LEYLINE_WORKER_LR": "0.1"}
    config = load_config(WorkerConfig, "worker", path, env, worker_flags(["--lr", "0.2"]))
    assert (config.id, config.seed, config.lr, config.epochs) == ("from-toml", 8, 0.2, 30)


def test_environment_text_is_parsed_to_the_field_type() -> None:
    env = {
        "LEYLINE_BUS_STALE_AFTER_S": "3",
        "LEYLINE_BUS_SEND_HWM": "500",
        "LEYLINE_BUS_METRICS_PORT": "9100",
    }
    config = load_config(BusConfig, "bus", env=env)
    assert (config.stale_after_s, config.send_hwm, config.metrics_port) == (3.0, 500, 9100)


def test_an_empty_variable_sets_an_optional_field_to_none(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[controller]\ncheckpoint = "policy.pt"\n')
    env = {"LEYLINE_CONTROLLER_CHECKPOINT": ""}
    assert load_config(ControllerConfig, "controller", path, env).checkpoint is None


def test_list_valued_variables_are_json() -> None:
    env = {"LEYLINE_WORKER_INTAKE": '["tcp://controller:5551","tcp://sink:5552"]'}
    config = load_config(WorkerConfig, "worker", env=env)
    assert config.intake == ("tcp://controller:5551", "tcp://sink:5552")


def test_a_list_variable_that_is_not_json_names_field_and_variable() -> None:
    env = {"LEYLINE_WORKER_INTAKE": "tcp://controller:5551"}
    message = error_of(lambda: load_config(WorkerConfig, "worker", env=env))
    assert message.startswith(
        "invalid config: worker.intake = tcp://controller:5551 (from LEYLINE_WORKER_INTAKE):"
    )
    assert "expected JSON" in message


def test_a_bad_variable_is_one_line_naming_field_value_and_variable() -> None:
    message = error_of(
        lambda: load_config(WorkerConfig, "worker", env={"LEYLINE_WORKER_EPOCHS": "0"})
    )
    assert message == (
        "invalid config: worker.epochs = 0 (from LEYLINE_WORKER_EPOCHS): Expected int >= 1"
    )


def test_a_bad_toml_value_names_field_and_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[sink]\nintake = "udp://0.0.0.0:5552"\n')
    message = error_of(lambda: load_config(SinkConfig, "sink", path, {}))
    assert message.startswith(f"invalid config: sink.intake = udp://0.0.0.0:5552 (from {path}):")


def test_toml_values_are_typed_so_a_quoted_number_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[worker]\nepochs = "10"\n')
    message = error_of(lambda: load_config(WorkerConfig, "worker", path, {}))
    assert message == f"invalid config: worker.epochs = 10 (from {path}): Expected int, got str"


def test_a_bad_flag_names_field_and_flag() -> None:
    flags = worker_flags(["--batch-size", "many"])
    message = error_of(lambda: load_config(WorkerConfig, "worker", env={}, flags=flags))
    assert message == (
        "invalid config: worker.batch_size = many (from --batch-size): Expected int, got str"
    )


def test_a_worker_id_that_is_not_a_topic_scope_is_refused() -> None:
    message = error_of(
        lambda: load_config(WorkerConfig, "worker", env={"LEYLINE_WORKER_ID": "w.1"})
    )
    assert message.startswith("invalid config: worker.id = w.1 (from LEYLINE_WORKER_ID):")


def test_settings_that_contradict_each_other_are_refused() -> None:
    env = {"LEYLINE_BUS_HEARTBEAT_S": "5", "LEYLINE_BUS_STALE_AFTER_S": "2"}
    message = error_of(lambda: load_config(BusConfig, "bus", env=env))
    assert message == "invalid config: bus: stale_after_s (2.0) must exceed heartbeat_s (5.0)"


def test_an_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[worker]\nepochz = 3\n")
    message = error_of(lambda: load_config(WorkerConfig, "worker", path, {}))
    assert message.startswith(f"invalid config: worker.epochz (from {path}): unknown setting;")
    assert "epochs" in message


def test_an_unknown_toml_section_is_refused_whichever_section_is_loaded(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[wokrer]\nepochs = 3\n")
    message = error_of(lambda: load_config(BusConfig, "bus", path, {}))
    assert message.startswith(f"invalid config: [wokrer] (from {path}): unknown section;")


def test_an_unknown_variable_of_a_known_section_is_refused() -> None:
    env = {"LEYLINE_WORKER_EPOCHZ": "3"}
    message = error_of(lambda: load_config(WorkerConfig, "worker", env=env))
    assert message.startswith("invalid config: worker.epochz (from LEYLINE_WORKER_EPOCHZ):")


def test_variables_of_other_sections_and_other_prefixes_are_left_alone() -> None:
    env = {"LEYLINE_BUS_HEARTBEAT_S": "2", "LEYLINE_LOG_LEVEL": "debug", "PATH": "/bin"}
    assert load_config(WorkerConfig, "worker", env=env) == WorkerConfig()


def test_a_missing_or_malformed_toml_file_is_a_config_error(tmp_path: Path) -> None:
    missing = error_of(lambda: load_config(BusConfig, "bus", tmp_path / "absent.toml", {}))
    assert missing.startswith("invalid config: cannot read")
    broken = write_toml(tmp_path, "[bus\n")
    assert "is not valid TOML" in error_of(lambda: load_config(BusConfig, "bus", broken, {}))


def test_every_duration_setting_is_in_seconds() -> None:
    """One unit for every duration, named by its suffix: a setting in ms is a trap."""
    for section, cls in SECTIONS.items():
        names = [field.name for field in msgspec.structs.fields(cls)]
        assert not [name for name in names if name.endswith("_ms")], section
    assert load_config(ControllerConfig, "controller", env={}).max_wait_s == 0.02


def test_a_setting_in_the_old_unit_is_refused_naming_the_new_one(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[controller]\nmax_wait_ms = 5\n")
    message = error_of(lambda: load_config(ControllerConfig, "controller", path, {}))
    assert message.startswith(f"invalid config: controller.max_wait_ms (from {path}): unknown")
    assert "max_wait_s" in message
    env = {"LEYLINE_CONTROLLER_MAX_WAIT_S": "0.005"}
    assert load_config(ControllerConfig, "controller", env=env).max_wait_s == 0.005


def test_every_field_gets_a_flag_named_after_it() -> None:
    for section, cls in SECTIONS.items():
        parser = argparse.ArgumentParser()
        add_config_flags(parser, cls, section)
        flags = {flag for action in parser._actions for flag in action.option_strings}
        names = {"--" + field.name.replace("_", "-") for field in msgspec.structs.fields(cls)}
        assert names <= flags


def test_flags_the_user_did_not_give_leave_lower_sources_alone() -> None:
    env = {"LEYLINE_WORKER_EPOCHS": "12", "LEYLINE_WORKER_ID": "w9"}
    config = load_config(WorkerConfig, "worker", env=env, flags=worker_flags(["--seed", "4"]))
    assert (config.epochs, config.id, config.seed) == (12, "w9", 4)


def test_list_flags_take_json_like_their_variables() -> None:
    flags = worker_flags(["--intake", '["ipc:///tmp/intake"]'])
    assert load_config(WorkerConfig, "worker", env={}, flags=flags).intake == ("ipc:///tmp/intake",)


def test_config_from_args_reads_the_file_named_by_the_config_flag(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[bus]\nsend_hwm = 77\n[worker]\nthreads = 2\n")
    args = worker_flags(["--config", str(path), "--receive-hwm", "88"])
    bus = config_from_args(BusConfig, "bus", args, env={})
    assert (bus.send_hwm, bus.receive_hwm) == (77, 88)
    assert config_from_args(WorkerConfig, "worker", args, env={}).threads == 2


class Toggles(msgspec.Struct, frozen=True, kw_only=True):
    """A stand-in with the field kinds the service structs do not use yet."""

    verbose: bool = False
    limit: Annotated[int, msgspec.Meta(ge=0)] | None = None


def test_boolean_fields_get_a_flag_and_its_negation() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Toggles, "toggles")
    on = load_config(Toggles, "toggles", env={}, flags=parser.parse_args(["--verbose"]))
    assert on.verbose is True
    env = {"LEYLINE_TOGGLES_VERBOSE": "true"}
    off = load_config(Toggles, "toggles", env=env, flags=parser.parse_args(["--no-verbose"]))
    assert off.verbose is False


def test_an_optional_flag_given_empty_is_none() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Toggles, "toggles")
    env = {"LEYLINE_TOGGLES_LIMIT": "3"}
    assert load_config(Toggles, "toggles", env=env).limit == 3
    flags = parser.parse_args(["--limit", ""])
    assert load_config(Toggles, "toggles", env=env, flags=flags).limit is None


def test_bus_settings_carry_into_socket_options() -> None:
    options = BusConfig(send_hwm=123, receive_hwm=456).socket_options()
    assert options == SocketOptions(send_hwm=123, receive_hwm=456)
