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

Stream = tuple[str, str, int]  # sender, topic, incarnation
#: Says whether every sequence strictly between two of a stream is stored.
Complete = Callable[[Stream, int, int], bool]

# The latest change of every slot of every stream: SQLite returns the bare columns of the
# row of MAX(sequence).
_LATEST = (
    "SELECT sender, topic, incarnation, slot_id, MAX(sequence), to_stage FROM stage_history"
    " GROUP BY sender, topic, incarnation, slot_id ORDER BY incarnation"
)


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

    def unstored(self, stream: Stream, slot: str, sequence: int) -> bool:
        """True when this change is certainly not stored yet: every stored change was judged,
        so one past the slot's last in the newest incarnation is new. False: look it up."""
        known = self._streams.get((stream[0], stream[1]))
        if known is None or known[0] < stream[2]:
            return True
        if known[0] > stream[2]:
            return False
        before = known[1].get(slot)
        return before is None or sequence > before[0]

    def judge(
        self,
        stream: Stream,
        sequence: int,
        slot: str,
        from_stage: SeedStage,
        to_stage: SeedStage,
        complete: Complete,
    ) -> str | None:
        """Why this newly stored change is illegal, or None; the slot then stands at `to_stage`."""
        sender = stream[0]
        if not is_valid_transition(from_stage, to_stage):
            verdict: str | None = (
                f"{sender}/{slot}: {from_stage.name} -> {to_stage.name} is not a legal transition"
            )
        else:
            verdict = None
        slots = self._slots(stream)
        before = slots.get(slot)
        if before is None or sequence > before[0]:
            if before is not None and verdict is None:
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
