"""Read models built from the event log only: history, summaries, config, runs, archive,
lineage and artifacts. Each records the last event position it applied in the same
transaction as its rows, so it applies every event exactly once and survives crashes."""
