"""Lets the fuzz tests import their harness (``fuzz_harness``) as a top-level module."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
