"""Each service's settings as validated data, from defaults, a TOML file, the environment and flags.

Later sources win: defaults < TOML file < `LEYLINE_<SECTION>_<FIELD>` variables < command-line
flags. Every value is checked against its field as it is read, so a bad one is reported with the
source it came from; unknown keys and variables are errors, so a typo never passes silently.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect as mi

from bus import SocketOptions
from leyline import LeylineError

ConfigT = TypeVar("ConfigT", bound=msgspec.Struct)

#: A ZeroMQ endpoint: `tcp://host:port`, `ipc://path` or `inproc://name`. A connect address
#: names the identity whose key it pins first: `controller@tcp://host:port`.
Address = Annotated[str, msgspec.Meta(pattern=r"^([A-Za-z0-9_\-:]{1,64}@)?(tcp|ipc|inproc)://\S+$")]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0.0, le=86_400.0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
FilePath = Annotated[str, msgspec.Meta(min_length=1)]
Rate = Annotated[float, msgspec.Meta(gt=0.0, le=10.0)]
#: A host name or IP address, as a ZeroMQ tcp endpoint names it (no port).
HostName = Annotated[
    str, msgspec.Meta(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+|[A-Za-z0-9_.\-]+)$")
]
#: The host families: `cnn` (digits) or `transformer` (generated text).
Topology = Literal["cnn", "transformer"]
#: A built-in policy, `module` (a whole torch.save'd module in the checkpoint), or an import
#: path `package.module:name` of a policy factory or class.
PolicyName = Annotated[
    str,
    msgspec.Meta(pattern=r"^(heuristic|mlp|module|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*)$", min_length=1),
]
POLICY_HELP = (
    "heuristic, mlp, module (a torch.save'd module in --checkpoint) or package.module:name "
    "(your policy factory or class, weights optionally from --checkpoint)"
)
#: The bus's topic-scope rule: a worker id is a topic scope.
WorkerId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-:]{1,64}$")]


def _help(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class BusConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Liveness, freshness and queue bounds shared by every service's sockets."""

    heartbeat_s: Annotated[Seconds, _help("seconds between a publisher's heartbeats")] = 1.0
    stale_after_s: Annotated[Seconds, _help("silence after which a peer is stale")] = 5.0
    max_signal_age_s: Annotated[Seconds, _help("fast signals older than this are dropped")] = 30.0
    send_hwm: Annotated[PositiveInt, _help("messages queued per peer before send fails")] = 10_000
    receive_hwm: Annotated[PositiveInt, _help("messages queued per peer on receive")] = 10_000
    metrics_port: Annotated[Port | None, _help("serve /metrics on this port")] = None
    replay_window: Annotated[
        int, msgspec.Meta(ge=0, le=1_000_000, description="messages kept per topic for replay")
    ] = 4096
    # Replay endpoint addresses (services/addresses.py resolves the defaults).
    replay_bind: Annotated[
        HostName | None,
        _help("host the replay endpoint binds (default: the found advertised address, else all)"),
    ] = None
    replay_advertise: Annotated[
        HostName | None,
        _help("host peers are told to replay from (default: this host's route to its first peer)"),
    ] = None
    keys_dir: Annotated[
        FilePath, _help("CURVE keys: trust/ (public certificates), secret/<id>.key_secret")
    ] = "leyline-data/keys"
    insecure: Annotated[bool, _help("plaintext and unauthenticated: for debugging only")] = False

    def __post_init__(self) -> None:
        if self.stale_after_s <= self.heartbeat_s:
            raise ValueError(
                f"stale_after_s ({self.stale_after_s}) must exceed heartbeat_s ({self.heartbeat_s})"
            )

    def socket_options(self) -> SocketOptions:
        """The transport options these settings imply; the rest keep their measured defaults."""
        return SocketOptions(send_hwm=self.send_hwm, receive_hwm=self.receive_hwm)


_RELAYS = "also subscribe through these proxies' backends (proxy@tcp://host:port)"


class SinkConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the telemetry sink listens and how it batches writes to SQLite."""

    intake: Annotated[Address, _help("the sink's subscriber binds here")] = "tcp://127.0.0.1:5552"
    db: Annotated[FilePath, _help("SQLite database file")] = "leyline-data/sink.db"
    relays: Annotated[tuple[Address, ...], _help(_RELAYS)] = ()
    batch_size: Annotated[PositiveInt, _help("rows per transaction at most")] = 256
    flush_interval_s: Annotated[Seconds, _help("longest wait before a batch is written")] = 0.2


class ControllerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The controller's endpoints, policy and inference-loop batching."""

    commands: Annotated[Address, _help("command publisher binds here")] = "tcp://127.0.0.1:5550"
    intake: Annotated[Address, _help("signal/ack subscriber binds here")] = "tcp://127.0.0.1:5551"
    sink: Annotated[Address, _help("publisher also connects to the sink here")] = (
        "sink@tcp://127.0.0.1:5552"
    )
    relays: Annotated[tuple[Address, ...], _help(_RELAYS)] = ()
    device: Annotated[
        str, msgspec.Meta(pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="torch device")
    ] = "auto"
    policy: Annotated[PolicyName, _help(POLICY_HELP)] = "heuristic"
    checkpoint: Annotated[FilePath | None, _help("policy checkpoint file (mlp, module, own)")] = (
        None
    )
    topology: Annotated[Topology, _help("host family")] = "cnn"
    max_batch: Annotated[PositiveInt, _help("signals per inference batch at most")] = 64
    max_wait_s: Annotated[
        float, msgspec.Meta(ge=0.0, le=10.0, description="longest wait to fill a batch")
    ] = 0.02
    journal: Annotated[FilePath, _help("durable journal of issued commands")] = (
        "leyline-data/controller-journal.db"
    )
    ack_timeout_s: Annotated[Seconds, _help("resend a command unacked for this long")] = 2.0


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One training worker's identity, endpoints and training settings."""

    id: Annotated[WorkerId, _help("this worker's id, unique in the run")] = "w1"
    commands: Annotated[Address, _help("connect to the controller's commands")] = (
        "controller@tcp://127.0.0.1:5550"
    )
    intake: Annotated[
        tuple[Address, ...],
        msgspec.Meta(min_length=1, description="publisher connects to each of these"),
    ] = ("controller@tcp://127.0.0.1:5551", "sink@tcp://127.0.0.1:5552")
    publish: Annotated[
        Address | None,
        _help("publisher also binds here, for tools to connect (leyline topic, record)"),
    ] = None
    epochs: Annotated[PositiveInt, _help("epochs to train")] = 30
    data_dir: Annotated[FilePath, _help("checkpoints and data live here")] = "leyline-data"
    topology: Annotated[Topology, _help("host: cnn on digits, transformer on generated text")] = (
        "cnn"
    )
    seed: Annotated[int, msgspec.Meta(ge=0, description="fixes every random choice")] = 0
    batch_size: Annotated[PositiveInt, _help("training batch size")] = 64
    lr: Annotated[Rate, _help("host learning rate (Adam)")] = 3e-3
    seed_lr: Annotated[Rate, _help("seed learning rate (Adam)")] = 3e-3
    embargo_epochs: Annotated[PositiveInt, _help("epochs a culled slot cools off")] = 3
    max_epochs_preset: Annotated[PositiveInt, _help("max epochs that set stage dwells")] = 25
    threads: Annotated[PositiveInt, _help("torch CPU threads")] = 1


class StackConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What `leyline up` launches on one machine."""

    workers: Annotated[PositiveInt, _help("training workers to start")] = 2
    epochs: Annotated[PositiveInt, _help("epochs each worker trains")] = 30
    data_dir: Annotated[FilePath, _help("every service's files go here")] = "leyline-data"
    topology: Annotated[Topology, _help("host family of every worker and the controller")] = "cnn"
    policy: Annotated[PolicyName, _help(POLICY_HELP)] = "heuristic"
    checkpoint: Annotated[FilePath | None, _help("the controller's policy checkpoint file")] = None
    resume: Annotated[bool, _help("continue the run in data_dir instead of starting a new one")] = (
        False
    )
    insecure: Annotated[bool, _help("plaintext, unauthenticated links: for debugging only")] = False


#: Every section a TOML file may hold, and the settings it configures.
SECTIONS: dict[str, type[msgspec.Struct]] = {
    "bus": BusConfig,
    "sink": SinkConfig,
    "controller": ControllerConfig,
    "worker": WorkerConfig,
    "stack": StackConfig,
}

ENV_PREFIX = "LEYLINE_"

_STRUCTURED = (
    mi.ListType,
    mi.TupleType,
    mi.VarTupleType,
    mi.SetType,
    mi.FrozenSetType,
    mi.DictType,
    mi.StructType,
)


class ConfigError(LeylineError):
    """A setting is invalid, unknown or unreadable; the message is one line naming it."""


class _Field(msgspec.Struct, frozen=True):
    """How one field is typed, and so how its text from the environment or a flag is read."""

    name: str
    type: Any
    optional: bool
    structured: bool
    boolean: bool
    description: str


def _fields(cls: type[msgspec.Struct]) -> dict[str, _Field]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    out = {}
    for field, inspected in zip(msgspec.structs.fields(cls), info.fields, strict=True):
        t, description = inspected.type, ""
        while isinstance(t, mi.Metadata):
            description = description or (t.extra_json_schema or {}).get("description", "")
            t = t.type
        members = t.types if isinstance(t, mi.UnionType) else (t,)
        kinds = [m for m in members if not isinstance(m, mi.NoneType)]
        out[field.name] = _Field(
            name=field.name,
            type=field.type,
            optional=len(kinds) < len(members),
            structured=any(isinstance(m, _STRUCTURED) for m in kinds),
            boolean=all(isinstance(m, mi.BoolType) for m in kinds),
            description=description,
        )
    return out


def _show(value: object) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _from_text(field: _Field, text: str) -> object:
    """Text from the environment or a flag: JSON for collections, empty for None, else as is."""
    if field.optional and text == "":
        return None
    if field.structured:
        try:
            return msgspec.json.decode(text)
        except msgspec.DecodeError as error:
            raise msgspec.ValidationError(f"expected JSON ({error})") from None
    return text


def _check(
    section: str, field: _Field, raw: object, source: str, *, strict: bool, text: bool
) -> object:
    try:
        value = _from_text(field, raw) if text and isinstance(raw, str) else raw
        return msgspec.convert(value, field.type, strict=strict)
    except msgspec.ValidationError as error:
        reason = str(error).replace("`", "")
        raise ConfigError(
            f"invalid config: {section}.{field.name} = {_show(raw)} (from {source}): {reason}"
        ) from None


def _unknown(section: str, key: str, source: str, fields: Mapping[str, _Field]) -> ConfigError:
    return ConfigError(
        f"invalid config: {section}.{key} (from {source}): unknown setting;"
        f" known: {', '.join(sorted(fields))}"
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"invalid config: cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"invalid config: {path} is not valid TOML: {error}") from None
    for name, table in document.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"invalid config: [{name}] (from {path}): unknown section;"
                f" known: {', '.join(sorted(SECTIONS))}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"invalid config: {name} (from {path}): expected a [{name}] table")
    return document


def _toml_values(
    section: str, fields: Mapping[str, _Field], path: Path
) -> Iterator[tuple[str, object]]:
    for key, value in _read_toml(path).get(section, {}).items():
        if key not in fields:
            raise _unknown(section, key, str(path), fields)
        yield key, _check(section, fields[key], value, str(path), strict=True, text=False)


def _env_values(
    section: str, fields: Mapping[str, _Field], env: Mapping[str, str]
) -> Iterator[tuple[str, object]]:
    prefix = f"{ENV_PREFIX}{section.upper()}_"
    for variable in sorted(env):
        if not variable.startswith(prefix):
            continue
        key = variable[len(prefix) :].lower()
        if key not in fields:
            raise _unknown(section, key, variable, fields)
        yield key, _check(section, fields[key], env[variable], variable, strict=False, text=True)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _dest(section: str, name: str) -> str:
    return f"{section}.{name}"


def _flag_values(
    section: str, fields: Mapping[str, _Field], flags: argparse.Namespace
) -> Iterator[tuple[str, object]]:
    given = vars(flags)
    for name, field in fields.items():
        dest = _dest(section, name)
        if dest in given:
            yield name, _check(section, field, given[dest], _flag(name), strict=False, text=True)


def load_config(
    cls: type[ConfigT],
    section: str,
    toml_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: argparse.Namespace | None = None,
) -> ConfigT:
    """`cls` from its defaults, then `[section]` of the TOML file, then `env`, then `flags`.

    `env` defaults to `os.environ`; `flags` is a namespace parsed by a parser that
    `add_config_flags` prepared. Raises `ConfigError` on the first bad or unknown value.
    """
    fields = _fields(cls)
    values: dict[str, object] = {}
    if toml_path is not None:
        values.update(_toml_values(section, fields, Path(toml_path)))
    values.update(_env_values(section, fields, os.environ if env is None else env))
    if flags is not None:
        values.update(_flag_values(section, fields, flags))
    try:
        return msgspec.convert(values, cls)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid config: {section}: {error}") from None


def add_config_flags(
    parser: argparse.ArgumentParser, cls: type[msgspec.Struct], section: str
) -> None:
    """Give `parser` a `--field-name` flag per field of `cls`; only flags a user gives apply."""
    group = parser.add_argument_group(f"{section} settings")
    defaults = cls()
    for name, field in _fields(cls).items():
        default = getattr(defaults, name)
        help_text = (
            f"{field.description} (default: {'none' if default is None else _show(default)})"
        )
        options: dict[str, Any] = {
            "dest": _dest(section, name),
            "default": argparse.SUPPRESS,
            "help": help_text.replace("%", "%%"),
        }
        if field.boolean:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["metavar"] = name.upper()
            if field.structured:
                options["help"] += " as JSON"
        group.add_argument(_flag(name), **options)


def add_config_file_flag(parser: argparse.ArgumentParser) -> None:
    """Give `parser` the `--config FILE` flag that names the TOML file."""
    parser.add_argument("--config", type=Path, default=None, help="TOML settings file")


def config_from_args(
    cls: type[ConfigT],
    section: str,
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
) -> ConfigT:
    """`load_config` for a CLI: the TOML file from `--config`, flags from `args`."""
    return load_config(cls, section, getattr(args, "config", None), env, args)
