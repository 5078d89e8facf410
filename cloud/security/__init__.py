"""The cloud's identity and security service: enrollment, certificates, revocation, signed commands,
operator access (RBAC) and the audit log, wired into the running cloud.

- ``signing``: the cloud's online signing key (commands, revocation lists), not the firmware release key;
- ``service``: ``SecurityService``, the decisions and their records (runs on the store thread);
- ``api``: the operator routes and the access check every request passes (``install_security``);
- ``cli``: ``edgefleet ca|enroll-token|audit|users|tokens`` and the ``devices`` security commands.
"""

from cloud.security.service import SecurityService
from cloud.security.signing import load_or_create_signing_key

__all__ = ["SecurityService", "load_or_create_signing_key"]
