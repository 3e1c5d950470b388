"""What a conversion wrote and what it skipped: counts per set and class, reasons with examples.

A :class:`Report` is filled by the converters while they read a source and printed and saved
(``OUT/convert_report.json``) by :mod:`cadet_d2.convert.writer`. Two kinds of events are counted:

* ``skipped``: a pair that was not written (missing partner image, duplicate stem, ...);
* ``notes``: something changed or dropped inside a written pair (a box clipped to the image, a
  box of an unknown class dropped, an empty annotation file kept as an image without objects).

Every event keeps its count and the first :data:`MAX_EXAMPLES` names (file or stem) it hit.
"""
from __future__ import annotations

import json
from collections import Counter

MAX_EXAMPLES = 10


class Events:
    """``reason -> count`` with the first few names per reason."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, name: str, n: int = 1) -> None:
        self.counts[reason] += n
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES and name not in ex:
            ex.append(name)

    def as_dict(self) -> dict:
        return {r: {"count": self.counts[r], "examples": self.examples[r]} for r in sorted(self.counts)}

    def lines(self) -> list[str]:
        out = []
        for r, v in self.as_dict().items():
            more = ", ..." if v["count"] > len(v["examples"]) else ""
            out.append(f"  {r}: {v['count']} (e.g. {', '.join(v['examples'])}{more})")
        return out


class Report:
    """Counts of one conversion (filled by a converter, summarised by the writer)."""

    def __init__(self, dataset: str, src: str) -> None:
        self.dataset, self.src = dataset, src
        self.skipped = Events()
        self.notes = Events()
        self.sets: dict[str, dict] = {}
        self.info: list[str] = []

    def _short(self, name: str) -> str:
        return name[len(self.src) + 1:] if name.startswith(self.src + "/") else name

    def skip(self, reason: str, name: str) -> None:
        """Count a pair that is not written (``name``: its file or stem; paths under src shortened)."""
        self.skipped.add(reason, self._short(name))

    def note(self, reason: str, name: str, n: int = 1) -> None:
        """Count a change inside a written pair (a clipped or dropped box, ...)."""
        self.notes.add(reason, self._short(name), n)

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "src": self.src, "sets": self.sets, "skipped_pairs": self.skipped.as_dict(),
                "notes": self.notes.as_dict(), "info": self.info}

    def text(self) -> str:
        lines = [f"{self.dataset} from {self.src}"]
        for name, s in self.sets.items():
            per_class = ", ".join(f"{c} {n}" for c, n in s["boxes"].items())
            lines.append(
                f"  {name}: {s['pairs']} pairs ({s['labeled']} labeled, {s['unlabeled']} without annotation file, "
                f"{s['without_objects']} labeled without objects); {sum(s['boxes'].values())} boxes "
                f"({per_class}); {s['ignore_boxes']} ignore regions"
            )
        lines += self.info
        lines.append("skipped pairs:" if self.skipped.counts else "skipped pairs: none")
        lines += self.skipped.lines()
        lines.append("notes:" if self.notes.counts else "notes: none")
        lines += self.notes.lines()
        return "\n".join(lines)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.as_dict(), f, indent=1)
            f.write("\n")
