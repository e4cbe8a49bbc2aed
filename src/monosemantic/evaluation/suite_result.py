"""The typed result of an evaluation suite: what the report, the demo and the JSON all read.

Contenders come in *groups*: the evaluated dictionary with its other seeds, the untrained copies
of each seed, the random-model control(s), and one group per baseline (neurons, PCA, ICA) and
for the raw activations (the dense probe's ceiling). A group's number is the mean over its
members with a 95% interval over them (:func:`~.seeds.interval`), and a verdict is drawn only
from intervals that do not overlap. A one-member group other than the evaluated dictionary (a
baseline, a control trained once) is a point; the dictionary with one seed has an unbounded
interval and claims nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .corpus import EvalCorpus
from .probing import ProbingResult
from .results import Result
from .seeds import Interval, SeedOverlapMatrix, interval
from .task_probing import ACTIVATIONS, TaskProbingResult

ROLES = ("dictionary", "baseline", "control", "ceiling")


@dataclass(frozen=True)
class SuiteResult(Result):
    title: str
    model: str
    site: str
    corpus: EvalCorpus
    ran: tuple[str, ...]  # the stages that ran
    notes: tuple[str, ...]  # stages or tasks skipped, and why
    groups: dict  # group name -> tuple of member (contender) names
    roles: dict  # group name -> one of ROLES
    per_dictionary: dict  # contender name -> tuple of results (reconstruction, splice, clustering, absorption)
    probing: ProbingResult | None  # token categories (Python corpora only)
    task_probing: TaskProbingResult | None  # contextual binary tasks
    seed_overlap: SeedOverlapMatrix | None  # cross-seed decoder overlap of the evaluated dictionary
    frontier: dict | None = None  # baseline name -> ((l0, fvu), ...) truncated to each L0 (frontier.py)

    @property
    def dictionary(self) -> str:
        """The evaluated dictionary's group."""
        return next(g for g, role in self.roles.items() if role == "dictionary")

    def task_interval(self, group: str, k: int | None, metric: str = "auroc") -> Interval | None:
        """The mean over tasks of ``group``'s probes with ``k`` latents, as an interval over its members."""
        if self.task_probing is None:
            return None
        values = [self.task_probing.mean(member, k, metric) for member in self.groups[group]]
        values = [v for v in values if not math.isnan(v)]
        if not values:
            return None
        if len(values) == 1 and self.roles[group] != "dictionary":
            # One fit (a baseline, or a control trained once) shows no spread: it is compared as a point.
            # The evaluated dictionary's own interval is what must clear it.
            return Interval(values[0], values[0], values[0], 1)
        return interval(values)

    def result_interval(self, group: str, kind: type, field: str) -> Interval | None:
        """``field`` of every member's result of ``kind`` (e.g. FVU), as an interval over the group's members."""
        values = [getattr(r, field) for m in self.groups[group] if (r := self.result(m, kind)) is not None]
        return interval(values) if values else None

    def result(self, member: str, kind: type):
        """``member``'s result of one kind (e.g. ReconstructionResult), or None."""
        return next((r for r in self.per_dictionary.get(member, ()) if isinstance(r, kind)), None)

    def verdict(self, k: int = 1) -> str:
        """One sentence from the k-sparse task intervals: does the dictionary beat every other group?"""
        ours = self.task_interval(self.dictionary, k)
        if ours is None or self.task_probing is None:
            return "No contextual task was scored, so there is no verdict."
        intervals = {g: self.task_interval(g, k) for g, role in self.roles.items() if role in ("baseline", "control")}
        others = {g: iv for g, iv in intervals.items() if iv is not None}
        above = [g for g, iv in others.items() if ours.separated_above(iv)]
        below = [g for g, iv in others.items() if iv.separated_above(ours)]
        unclear = [g for g in others if g not in above and g not in below]
        head = (f"Mean k={k} AUROC over {len(self.task_probing.tasks)} contextual tasks: {self.dictionary} "
                f"{show(ours)}.")
        parts = []
        if above:
            parts.append(f"above {', '.join(f'{g} {show(others[g])}' for g in above)}")
        if below:
            parts.append(f"below {', '.join(f'{g} {show(others[g])}' for g in below)}")
        if unclear:
            parts.append(f"not separable from {', '.join(f'{g} {show(others[g])}' for g in unclear)} (intervals overlap"
                         f"{'; one seed gives no interval' if ours.n < 2 else ''})")
        ok = not below and not unclear
        verdict = "It beats every baseline and control" if ok else "It does not beat every baseline and control"
        return f"{head} {verdict}: {'; '.join(parts)}."

    def headline(self, ks=(1, 2, 5)) -> list[dict]:
        """One row per group: task AUROC intervals per k (and the dense probe), members, role."""
        rows = []
        for group, members in self.groups.items():
            row = {"group": group, "role": self.roles[group], "members": len(members)}
            for k in ks:
                row[f"auroc_k{k}"] = self.task_interval(group, k)
            row["auroc_dense"] = self.task_interval(group, None) if group == ACTIVATIONS or \
                self.roles[group] == "ceiling" else None
            rows.append(row)
        return rows


def show(value: Interval) -> str:
    """``0.712 [0.690, 0.734] (3 seeds)``; a point or a single seed without brackets."""
    if value.n < 2:
        return f"{value.mean:.3f}" + (" (1 seed)" if math.isinf(value.high) else "")
    return f"{value} ({value.n} seeds)"
