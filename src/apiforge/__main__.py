"""`python -m apiforge`: the `apiforge` command, where the script is not on PATH."""

from apiforge.cli import main

main()
