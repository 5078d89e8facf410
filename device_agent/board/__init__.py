"""The board the agent updates: a profile (config), probes of the running system, and the boards.

    profile  BoardProfile, load_profile(): the ``[board]`` table and flags, checked
    probes   booted_slot(), running_version(), run_reboot(): what the running system says
    boards   SimBoard (the demo's simulated board), RealBoard (GRUB or U-Boot, real slots), make_board()

Nothing is imported here: the agent's CLI reads the profile without loading the update machinery
(an idle agent stays small); import the module you need.
"""

__all__: list[str] = []
