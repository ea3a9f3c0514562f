"""Expressions read times in UTC whatever the server's time zone.

The engine reads the process's zone once, on its first use, so the zone is set in a child
process rather than with `time.tzset()` here (which would depend on the tests run before)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apiforge.tools import expressions

_PROGRAM = """
from datetime import datetime
from apiforge.tools.expressions import compile_expression
naive = datetime(2024, 5, 6, 7, 8, 9)
print(compile_expression("now").evaluate({"now": naive}))
print(compile_expression("now.getHours()").evaluate({"now": naive}))
"""


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/Adak"])
def test_a_naive_now_is_utc_on_a_server_in_another_zone(zone: str) -> None:
    source_root = Path(expressions.__file__).resolve().parents[2]
    env = {**os.environ, "TZ": zone, "PYTHONPATH": str(source_root)}
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed program
        [sys.executable, "-c", _PROGRAM],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2024-05-06T07:08:09Z", "7"]
