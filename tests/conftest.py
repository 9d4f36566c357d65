import sys
from pathlib import Path

# tests import helpers (registry.py, …) from this folder; the package itself is pip-installed
sys.path.insert(0, str(Path(__file__).parent))
