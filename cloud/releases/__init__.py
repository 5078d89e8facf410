"""Firmware releases in the cloud: ``plan`` (the pure checks and choices: request, delta bases,
signature, views), ``service`` (upload, deltas, publish), ``artifacts`` (images and deltas on disk,
content-addressed) and ``firmware`` (the cloud's side of firmware transfer: offers and chunks to gateways).

Their records are kept by ``cloud.store.releases``; routes ``cloud.http.releases``; commands ``cloud.cli.releases``.
"""
