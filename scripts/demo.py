"""Placeholder: the demo (the main job run by `make demo`) is not written yet."""

import sys

print("demo not yet written")
sys.exit(1)
