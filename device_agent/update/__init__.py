"""Device updates that never brick: A/B slots, a health-checked trial boot, automatic rollback.

    states      the state machine as one table, the persisted UpdateRecord, pure step()
    store       RecordStore: the record on disk, replaced atomically
    plan        plan_install(): refuse (hardware, security floor, downgrade), pick the slot, no I/O
    installer   check_image(), write_slot(): stream the image into the slot and verify it
    health      health checks for the trial boot (version, gateway reached, hook commands)
    bootloader  the Bootloader port, BootState, SimBootloader
    grub        GrubBootloader (grub-editenv), uboot: UBootBootloader (fw_printenv/fw_setenv)
    core        UpdateCore: sans-IO, events in, effects out; UpdateReport
    driver      UpdateDriver: runs the effects against a bootloader, slot files and the store
"""

from device_agent.update.bootloader import SLOTS, Bootloader, BootState, SimBootloader, other_slot
from device_agent.update.core import ManifestRejected, PowerOn, StartUpdate, UpdateCore, UpdateReport
from device_agent.update.driver import UpdateDriver
from device_agent.update.grub import GrubBootloader
from device_agent.update.health import HealthResult, gateway_reached, hook_commands, run_health_checks, version_matches
from device_agent.update.installer import check_image, hash_file, write_slot
from device_agent.update.plan import InstallPlan, LocalManifest, Manifest, plan_install
from device_agent.update.states import FINAL, TABLE, State, UpdateRecord, step
from device_agent.update.store import RecordStore
from device_agent.update.uboot import UBootBootloader

__all__ = [
    "FINAL",
    "SLOTS",
    "TABLE",
    "BootState",
    "Bootloader",
    "GrubBootloader",
    "HealthResult",
    "InstallPlan",
    "LocalManifest",
    "Manifest",
    "ManifestRejected",
    "PowerOn",
    "RecordStore",
    "SimBootloader",
    "StartUpdate",
    "State",
    "UBootBootloader",
    "UpdateCore",
    "UpdateDriver",
    "UpdateRecord",
    "UpdateReport",
    "check_image",
    "gateway_reached",
    "hash_file",
    "hook_commands",
    "other_slot",
    "plan_install",
    "run_health_checks",
    "step",
    "version_matches",
    "write_slot",
]
