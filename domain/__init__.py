"""The pure domain model of runhistory: the Run aggregate, its events and rules.

Nothing in this package does I/O: no SQL, no network, no clock reads except the
event timestamps the `eventsourcing` library stamps on each event.
"""
