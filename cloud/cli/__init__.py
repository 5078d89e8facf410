"""The operator commands (``edgefleet devices|sites|alerts|groups|config|metrics|release|rollout|ca|...``).

    helpers.py   what every command shares: ``api_options`` (--api, --token, --data-dir, --json),
                 ``emit(data, as_json, human)``, ``format_table``, times, durations, sizes
    client.py    the operator API's HTTP client (``ApiClient``, ``resolve_endpoint``)
    devices.py   ``devices``: its own commands (list, gaps, commands, command) and the group, built
                 from them and the fleet's and security's device commands
    sites.py, alerts.py, fleet.py (device fleet commands, groups), config.py, metrics.py,
    releases.py, rollouts.py, security.py (enroll-token, users, tokens, audit; device security commands),
    ca.py (the fleet CA, on files)

Each command module imports only ``helpers`` and the client (``devices`` also the two modules whose
device commands it groups; ``ca`` the CA's issuing code); none adds to another module's group
(tests/cloud/cli/test_cli_layout.py checks both). ``common.cli`` loads them lazily.
The node command ``edgefleet cloud`` is ``cloud.node_cli``.
"""
