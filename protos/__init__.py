"""runhistory's gRPC API: the proto and the Python modules generated from it."""
