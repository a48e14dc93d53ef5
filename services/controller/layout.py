"""Where each kind of action sits in a topology's action enum, read once from the enum."""

from __future__ import annotations

import enum

from leyline.actions import DEFAULT_CATALOG, BlueprintCatalog, blueprint_of


class ActionLayout:
    """The indices of WAIT, FOSSILIZE, CULL and each GERMINATE_<blueprint> of one topology.

    Built from `BlueprintCatalog.actions`, so policies and masks never hard-code an index.
    """

    __slots__ = ("actions", "cull", "fossilize", "germinate", "topology", "wait")

    def __init__(self, topology: str, catalog: BlueprintCatalog = DEFAULT_CATALOG) -> None:
        self.topology = topology
        self.actions: type[enum.IntEnum] = catalog.actions(topology)
        members = self.actions.__members__
        self.wait = int(members["WAIT"])
        self.fossilize = int(members["FOSSILIZE"])
        self.cull = int(members["CULL"])
        #: Blueprint name to its GERMINATE action index, in enum order.
        self.germinate: dict[str, int] = {
            name: int(member)
            for member in self.actions
            if (name := blueprint_of(member)) is not None
        }

    def __len__(self) -> int:
        return len(self.actions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActionLayout) and self.names == other.names

    def __hash__(self) -> int:
        return hash(self.names)

    @property
    def names(self) -> tuple[str, ...]:
        """The member names in index order: what a checkpoint records to detect a mismatch."""
        return tuple(member.name for member in self.actions)

    def action(self, index: int) -> enum.IntEnum:
        """The enum member at `index`."""
        return self.actions(index)

    def germinate_action(self, blueprint: str) -> int:
        """The GERMINATE index of `blueprint`; a clear error when the topology lacks it."""
        try:
            return self.germinate[blueprint]
        except KeyError:
            known = ", ".join(self.germinate)
            raise KeyError(
                f"blueprint {blueprint!r} is not registered for topology {self.topology!r} "
                f"(known: {known})"
            ) from None
