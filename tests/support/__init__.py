"""What the test modules share: helpers, fixtures' building blocks and the servers they start.

Test modules import from here and never from each other.
"""

from __future__ import annotations

from pathlib import Path

# The checkout: manage.py, the apps, docs/ and tests/ are under it.
ROOT = Path(__file__).resolve().parents[2]
