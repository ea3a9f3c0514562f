"""A malformed `APIFORGE_*` variable stops every command with its name, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path


def test_a_bad_setting_stops_the_cli_with_its_name(tmp_path: Path) -> None:
    env = {**os.environ, "APIFORGE_DATA_DIR": str(tmp_path), "APIFORGE_PORT": "70000"}
    done = subprocess.run(
        [sys.executable, "-c", "from apiforge.cli import main; main()", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "APIFORGE_PORT" in done.stderr
    assert "Traceback" not in done.stderr
