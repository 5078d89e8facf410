"""Alerts in the cloud: ``service`` (what the cloud hears in; alert rows and events out, around
``common.alerting``'s engine) and ``webhooks`` (delivering events, retried, never blocking the rest).

Their records are kept by ``cloud.store.alerts``; routes ``cloud.http.alerts``; commands ``cloud.cli.alerts``.
"""
