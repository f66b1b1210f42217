"""WatchUsage's initial metadata, for both ends: the engine sends it once the subscription is live; a refused
subscription ends without it (chittycan.v1.UsageService, observability.proto)."""

LIVE_METADATA = ("chittycan-watch", "live")
