"""What setup.py declares, read without running it: the console scripts (COMMANDS)."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def setup_commands():
    """Sorted names of every command setup.py installs (its COMMANDS table)."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMMANDS":
            return sorted(ast.literal_eval(node.value))
    raise AssertionError("setup.py: no COMMANDS table")
