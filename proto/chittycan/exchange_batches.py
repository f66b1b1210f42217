"""Batching serialized messages for the exchange stream (both ends): concatenated one-item messages are one message.

Protobuf merges repeated fields when serialized messages are concatenated, so one-call ExchangeRequests (or
one-event ExchangeResponses) joined together parse as one message holding them all.
"""

MESSAGE_LIMIT = 64 << 20  # grpc.max_send/receive_message_length on both sides of the facade-engine hop
BATCH_BYTES = 4 << 20  # items queued together share one message up to this size
# Flow control of StreamChat calls (exchange.proto, CallCredit): the engine sends this many events of a call
# beyond those credited; the caller credits what its reader has taken every CREDIT_EVENTS events.
STREAM_WINDOW_EVENTS = 256
CREDIT_EVENTS = 64


def take_batch(queued: list[bytes]) -> tuple[bytes, list[bytes]]:
    """One message from the front of `queued` (at least one item, more while under BATCH_BYTES), and the rest."""
    size, count = 0, 0
    for item in queued:
        size += len(item)
        if count and size > BATCH_BYTES:
            break
        count += 1
    return b"".join(queued[:count]), queued[count:]
