"""Known defects of a framework, as an adapter declares them.

A defect the suite found in a framework is a result: it is written up in docs/findings.md with
a stand-alone reproducer under docs/findings/, and re-checked against the installed version by
adapters/tests. The adapter lists it in ``known_defects`` so that the property tests it makes
fail are marked with the finding: in a run of every available backend (plain ``pytest``) they
are reported as xfail naming the finding; in a run of that backend alone (``--backend``) they
fail as any property does, and the failure report names the finding. The adapter itself never
works around the defect.
"""
from __future__ import annotations

from typing import NamedTuple, Optional


class KnownDefect(NamedTuple):
    finding: str  # the anchor of its section in docs/findings.md, e.g. "onnxruntime-tanh-overshoot"
    tests: tuple  # names of the property test functions it makes fail
    cells: Optional[tuple] = None  # None: every cell
    dtypes: Optional[tuple] = None  # dtype names ("float32"); None: every dtype
    halves: Optional[tuple] = None  # of a structure property: "forward", "backward"; None: both

    def matches(self, test_name: str, cell: Optional[str], dtype: Optional[str], half: Optional[str] = None) -> bool:
        return (test_name in self.tests
                and (self.cells is None or cell is None or cell in self.cells)
                and (self.dtypes is None or dtype is None or dtype in self.dtypes)
                and (self.halves is None or half is None or half in self.halves))


def check_known_defects(defects) -> tuple:
    """The declared defects as a tuple, each a KnownDefect; anything else is a TypeError naming it."""
    defects = tuple(defects or ())
    for item in defects:
        if not isinstance(item, KnownDefect):
            raise TypeError(f"known_defects: expected KnownDefect items; got {type(item).__name__}")
    return defects
