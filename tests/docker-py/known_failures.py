"""pytest plugin: the docker-py tests Berth does not pass yet run as strict xfails.

The list is known-failures.txt beside this file (BERTH_KNOWN_FAILURES names it): one
pytest node id a line, '#' and the reason after it. A listed test that fails is reported
as xfailed; one that passes fails the run (strict), so the list only ever shrinks; a
listed id that names no test fails the run too (a stale entry).
"""

import os

import pytest


def _load():
    known = {}
    with open(os.environ["BERTH_KNOWN_FAILURES"], encoding="utf-8") as f:
        for line in f:
            entry, _, reason = line.partition("#")
            entry = entry.strip()
            if entry:
                known[entry] = reason.strip() or "not supported by Berth yet"
    return known


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    known = _load()
    seen = set()
    files = {item.nodeid.split("::")[0] for item in items}
    for item in items:
        reason = known.get(item.nodeid)
        if reason is not None:
            seen.add(item.nodeid)
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    # Only entries of the files collected: a run of a few files is no stale list.
    stale = sorted(k for k in set(known) - seen if k.split("::")[0] in files)
    if stale:
        raise pytest.UsageError(
            "known-failures.txt names tests that do not exist: " + ", ".join(stale)
        )
