"""Knowing the fleet (issue 8): what operators see of their devices and how they change them.

    views.py          device views computed from one store snapshot; dynamic groups; desired configs
    query/            the device query language (``--where``, dynamic groups): syntax and evaluation
    config_layers.py  layered config documents (global < site < group < device), locks, provenance
    config_push.py    desired config per device and the ``config`` commands that deliver it
    lifecycle.py      device states, the transition table, the one place a transition happens
    rollup.py         metric samples downsampled into minute and hour aggregates; retention tiers
    jobs.py           the periodic fleet work on apscheduler (retention, config push, ghost inputs)

Their records are kept by ``cloud.store.fleet`` and ``cloud.store.metrics``; their routes are
``cloud.http.fleet``, their commands ``cloud.cli.fleet``.
"""
