"""The cloud's identity and security: enrollment, certificates, revocation, signed commands, operator
access (RBAC) and the audit log.

- ``ca``: the fleet CA's issuing side (checking certificates is ``common.pki``);
- ``enrollment``: the pure enrollment decision (claims, rate limit, rules);
- ``rbac``: roles, permissions and API tokens; ``audit``: the hash-chained audit log's records;
- ``revocations``: the current revocation list; ``signing``: the cloud's online signing key;
- ``service``: ``SecurityService``, the decisions and their records (runs on the store thread).

Their records are kept by ``cloud.store.security``; routes ``cloud.http.security`` (with the access
check every request passes, ``cloud.http.access``); commands ``cloud.cli.security``.
"""
