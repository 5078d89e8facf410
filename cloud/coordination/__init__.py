"""N coordinators over one database: the leader lease with a fencing token, gateway sessions, wake-ups.

``lease`` (sans-IO: when to claim, what an answer means), ``tail`` (sans-IO: the leader's read of
what every coordinator stored), ``postgres`` (the statements), ``runtime`` (the asyncio driver the
cloud's process runs). docs/DEPLOY.md says how to run one and N coordinators.
"""

from cloud.coordination.lease import BecameLeader, Claim, LeaseCore, LeaseSettings, Release, SteppedDown
from cloud.coordination.runtime import Coordination
from cloud.coordination.tail import TailCursor, batches

__all__ = ["BecameLeader", "Claim", "Coordination", "LeaseCore", "LeaseSettings", "Release", "SteppedDown", "TailCursor", "batches"]
