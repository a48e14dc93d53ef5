"""Judging the stage changes workers report, so that `illegal` flags only what was illegal.

A change is judged against the change before it in the same stream: same sender, topic and
incarnation, lower sequence. A restarted worker resumes from its checkpoint, which may be
behind what its last life reported, so a new incarnation starts every slot afresh. A change
whose predecessor may be among sequences not stored (a gap, a loss) is judged on its own
edge only: the missing message may be the change that explains it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from leyline import SeedStage
from leyline.lifecycle import is_valid_transition
from services.sink.losses import Stream

#: Says whether every sequence strictly between two of a stream is stored.
Complete = Callable[[Stream, int, int], bool]

# The latest change of every slot of every stream: SQLite returns the bare columns of the
# row of MAX(sequence).
_LATEST = (
    "SELECT sender, topic, incarnation, slot_id, MAX(sequence), to_stage FROM stage_history"
    " GROUP BY sender, topic, incarnation, slot_id ORDER BY incarnation"
)


class Repeat:
    """The answer for a change already stored: neither judged again nor moving the judge."""


REPEAT = Repeat()


def _edge(sender: str, slot: str, from_stage: SeedStage, to_stage: SeedStage) -> str | None:
    """Why the edge itself is illegal, whatever came before; None when the map lists it."""
    if is_valid_transition(from_stage, to_stage):
        return None
    return f"{sender}/{slot}: {from_stage.name} -> {to_stage.name} is not a legal transition"


class StageJudge:
    """The last reported stage of each slot, per stream; judges each newly stored change."""

    def __init__(self) -> None:
        # (sender, topic) -> the newest incarnation seen and, per slot, (sequence, stage).
        self._streams: dict[tuple[str, str], tuple[int, dict[str, tuple[int, SeedStage]]]] = {}

    @classmethod
    def from_history(cls, connection: sqlite3.Connection) -> StageJudge:
        """The judge as the committed stage history leaves it."""
        judge = cls()
        for sender, topic, incarnation, slot, sequence, stage in connection.execute(_LATEST):
            if stage is not None:  # a stage this version does not know is judged afresh
                judge._slots((sender, topic, incarnation))[slot] = (sequence, SeedStage[stage])
        return judge

    def judge(
        self,
        stream: Stream,
        sequence: int,
        slot: str,
        from_stage: SeedStage,
        to_stage: SeedStage,
        stored: Callable[[], bool],
        complete: Complete,
    ) -> str | Repeat | None:
        """Why this change is illegal, None when legal, REPEAT when it is already stored.

        `stored` is asked only when the judge cannot tell: every stored change was judged,
        so one past its slot's last in the newest incarnation is certainly new.
        """
        sender, topic, incarnation = stream
        known = self._streams.get((sender, topic))
        if known is None or known[0] < incarnation:
            slots: dict[str, tuple[int, SeedStage]] = {}
            self._streams[(sender, topic)] = (incarnation, slots)
            before = None
        else:
            slots = known[1]
            before = slots.get(slot) if known[0] == incarnation else None
            if known[0] > incarnation or (before is not None and sequence <= before[0]):
                # An earlier life's, or a late fill-in: its own edge only, the slot stays.
                return REPEAT if stored() else _edge(sender, slot, from_stage, to_stage)
        verdict = _edge(sender, slot, from_stage, to_stage)
        if verdict is None and before is not None:
            previous, stage = before
            if stage is not from_stage and complete(stream, previous, sequence):
                verdict = (
                    f"{sender}/{slot}: reported {from_stage.name} -> {to_stage.name}, "
                    f"but the slot is in {stage.name}"
                )
        slots[slot] = (sequence, to_stage)
        return verdict

    def _slots(self, stream: Stream) -> dict[str, tuple[int, SeedStage]]:
        """The slots of `stream`; a newer incarnation replaces an older one's."""
        sender, topic, incarnation = stream
        known = self._streams.get((sender, topic))
        if known is None or known[0] < incarnation:
            known = self._streams[(sender, topic)] = (incarnation, {})
        elif known[0] > incarnation:
            return {}  # a late message of an earlier life: judged on its own edge only
        return known[1]
