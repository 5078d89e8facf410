"""hawkBit's Direct Device Integration (DDI) API on the site gateway: devices that run SWUpdate's suricatta
(or another hawkBit client) update through EdgeFleet as they are (``docs/DDI.md``).

- ``tokens``: TargetTokens (and an optional GatewayToken) checked, sans-IO;
- ``api``: the DDI JSON, made and checked, pure;
- ``core``: ``DdiDevices``, the gateway core's part that maps requests onto the fleet (records, held
  update commands, the site cache), sans-IO;
- ``events``: what passes between that part and its driver;
- ``server``: the HTTP driver (h11 on asyncio, TLS with the site's certificate), opt-in (``--ddi-bind``).
"""
