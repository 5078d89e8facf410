"""The cloud's part of rollouts: ``service`` (the engines of the active rollouts, persisted, their installs
turned into device commands, site plans signed and sent) and ``conflicts`` (one device, one rollout).

The engine, plan, state tables, windows and site plans are shared with the gateway: ``common.rollouts``.
"""
