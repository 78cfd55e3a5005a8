"""The gRPC entrypoint: `servicer` (the RPCs), `mapping` (requests and results to and from
messages), `refusals` (errors to statuses) and `server` (start and stop)."""
