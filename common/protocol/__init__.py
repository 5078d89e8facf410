"""The one wire protocol: typed records (``messages``) and the only msgpack codec (``codec``)."""

from common.protocol.codec import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    decode,
    decode_record,
    encode,
    encode_record,
    negotiate,
)
from common.protocol.messages import (
    MESSAGE_TYPES,
    ErrorReply,
    ForwardAck,
    ForwardBatch,
    ForwardRecord,
    Heartbeat,
    Hello,
    HelloAck,
    Message,
    TelemetryAck,
    TelemetryBatch,
    TelemetryRecord,
)

__all__ = [
    "MAX_FRAME",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "ErrorReply",
    "ForwardAck",
    "ForwardBatch",
    "ForwardRecord",
    "Heartbeat",
    "Hello",
    "HelloAck",
    "Message",
    "TelemetryAck",
    "TelemetryBatch",
    "TelemetryRecord",
    "decode",
    "decode_record",
    "encode",
    "encode_record",
    "negotiate",
]
