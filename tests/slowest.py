"""Print the slowest tests of one or more JUnit XML reports (``python -m tests.slowest A.xml ...``).

A test's time in pytest's JUnit report is its set-up, call and teardown together, so the first
test to use a graph or an engine carries its start. Missing reports are skipped (a tier that did
not run).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def slowest(reports: list[Path], count: int = 25) -> list[tuple[float, str]]:
    """The ``count`` longest (seconds, test id) pairs of ``reports``, longest first."""
    timed = []
    for report in reports:
        if not report.is_file():
            continue
        for case in ET.parse(report).iter("testcase"):
            test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
            timed.append((float(case.get("time") or 0), test_id))
    return sorted(timed, reverse=True)[:count]


def main(argv: list[str]) -> None:
    rows = slowest([Path(a) for a in argv])
    total = sum(seconds for seconds, _ in rows)
    print(f"slowest {len(rows)} tests ({total:.0f} s together):")
    for seconds, test_id in rows:
        print(f"{seconds:8.1f}s  {test_id}")


if __name__ == "__main__":
    main(sys.argv[1:])
