"""docs/findings.md stays true to the adapters: every defect an adapter declares (known_defects) has
its section, under its anchor, in docs/findings/<framework>.md, with a reproducer script that exists,
and a row in docs/findings.md; every property test it names exists in the suite."""
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from adapters.known import check_known_defects

REPO = Path(__file__).resolve().parents[2]
FINDINGS = REPO / "docs" / "findings"
#: adapter module -> the package it needs
ADAPTERS = {"adapters.onnxruntime": "onnxruntime", "adapters.keras": "keras", "adapters.flax": "flax"}


def property_tests() -> set:
    names = set()
    for path in (REPO / "properties").glob("test_*.py"):
        names |= set(re.findall(r"^def (test_\w+)\(", path.read_text(), re.MULTILINE))
    return names


@pytest.mark.parametrize("module_name", ADAPTERS)
def test_every_declared_defect_is_written_up_with_a_reproducer(module_name):
    if importlib.util.find_spec(ADAPTERS[module_name]) is None:  # not importing it: keras picks its backend then
        pytest.skip(f"{ADAPTERS[module_name]} is not installed")
    module = importlib.import_module(module_name)  # an installed framework's adapter must import
    framework = module_name.rpartition(".")[2]
    defects = check_known_defects(getattr(module, "known_defects", ()))
    page = (FINDINGS / f"{framework}.md").read_text() if defects else ""
    index = (REPO / "docs" / "findings.md").read_text()
    tests = property_tests()
    for defect in defects:
        anchor = f'<a id="{defect.finding}"></a>'
        assert anchor in page, f"{defect.finding}: no section {anchor} in docs/findings/{framework}.md"
        section = page[page.index(anchor):].split('<a id="', 2)[1]
        scripts = re.findall(r"docs/findings/(\w+\.py)", section)
        assert scripts and all((FINDINGS / s).is_file() for s in scripts), \
            f"{defect.finding}: its section names no reproducer that exists ({scripts})"
        assert f"findings/{framework}.md#{defect.finding}" in index, \
            f"{defect.finding}: no row in docs/findings.md linking to it"
        unknown = set(defect.tests) - tests
        assert not unknown, f"{defect.finding}: names property tests that do not exist: {sorted(unknown)}"
