"""Python client library for the ChittyCan engine (chittycan.v1 over gRPC), and the `can` CLI."""
