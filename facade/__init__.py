"""ChittyCan facade: an aiohttp app translating OpenAI REST/SSE to and from the engine's gRPC calls."""
