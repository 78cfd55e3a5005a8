"""runhistory: open, event-sourced run history for machine-learning experiments."""

__version__ = "0.1.0"
