"""The service layer (settings, API keys, the event store, the run service's commands and
queries, their read records and the event log) and, each in a package of its own, the
entrypoints over it: `rpc` (gRPC), `web` (the web UI) and `cli` (the `runhistory`
command). `bootstrap` builds the services once and starts the entrypoints."""
