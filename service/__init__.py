"""The service layer: the event-sourced application, its commands and queries, and
(in later modules) the adapters that expose them over gRPC and the command line."""
