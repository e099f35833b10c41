"""The three staff roles, as Django groups, and what each may do.

Operators and integrators may register, revoke and re-issue; auditors only read. Integrators
are API-only: the portal pages refuse them (their work is scripted). Superusers may do
everything.
"""

from __future__ import annotations

OPERATORS = "Operators"
INTEGRATORS = "Integrators"
AUDITORS = "Auditors"

VIEW = "devices.view_device"
REGISTER = "devices.register_device"
REVOKE = "devices.revoke_device"
REISSUE = "devices.reissue_device"
