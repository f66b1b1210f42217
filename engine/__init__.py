"""ChittyCan routing engine: a grpc.aio server speaking chittycan.v1."""
