"""The read models' tables. Every row is derived from events only (event positions and
event timestamps, never the wall clock), so a rebuild reproduces them exactly.

JSON columns are TEXT written with Python's json module: NaN and +/-Inf must survive, and
PostgreSQL's jsonb would refuse them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Last event position applied, one row per projection.
tracking = Table(
    "rh_tracking",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# ---- history: segments and rows -------------------------------------------------------
# A segment is one version of one run. Its own rows start after `parent_step`; the rows it
# inherits are its parent segment's visible rows up to `parent_step`. A rewind starts a new
# segment whose parent is the archived one; a fork starts a segment whose parent is the
# source's segment at the fork. Nothing is copied and nothing is deleted.
segments = Table(
    "rh_segments",
    metadata,
    Column("segment_id", BigInteger, primary_key=True),  # position of the event that began it
    Column("run_uuid", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("parent_segment", BigInteger),
    Column("parent_step", BigInteger),
    Column("own_rows", BigInteger, nullable=False),
    Column("last_step", BigInteger),
    # Own rows up to `sealed_step` are in rh_history_blocks, the rest in rh_history_tail.
    Column("sealed_rows", BigInteger, nullable=False),
    Column("sealed_step", BigInteger),
    UniqueConstraint("run_uuid", "version", name="rh_segments_run_version"),
)

# A segment's history, key by key: a block is one key's points in a run of the segment's
# rows, packed as in domain/series.py; `_timestamp` and `_runtime` are blocks too, with a
# point for every row. Rows are sealed into blocks a batch (or SEAL_ROWS rows) at a time.
history_blocks = Table(
    "rh_history_blocks",
    metadata,
    Column("segment_id", BigInteger, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("first_step", BigInteger, primary_key=True),
    Column("last_step", BigInteger, nullable=False),
    Column("kind", String(1), nullable=False),
    Column("steps", LargeBinary, nullable=False),
    Column("data", LargeBinary, nullable=False),  # the values, packed as `kind` says
)

# The rows not sealed yet, fewer than SEAL_ROWS per segment: deleted when they are sealed.
history_tail = Table(
    "rh_history_tail",
    metadata,
    Column("segment_id", BigInteger, primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("timestamp", Float, nullable=False),
    Column("runtime", Float, nullable=False),
    Column("data", Text, nullable=False),
)
Index(
    "rh_history_blocks_end",
    history_blocks.c.segment_id,
    history_blocks.c.key,
    history_blocks.c.last_step,
)

# ---- summaries -------------------------------------------------------------------------
summaries = Table(
    "rh_summaries",
    metadata,
    Column("segment_id", BigInteger, primary_key=True),
    Column("state", Text, nullable=False),  # SummaryState of the segment's visible rows
    Column("overrides", Text, nullable=False),  # explicit summary values
    Column("metrics", Text, nullable=False),  # define_metric choices
    Column("rows_since_checkpoint", Integer, nullable=False),
)

# SummaryState as of a step, kept every few hundred rows, so the summary at any step of any
# segment costs one lookup plus a bounded fold, whatever the history's length.
summary_checkpoints = Table(
    "rh_summary_checkpoints",
    metadata,
    Column("segment_id", BigInteger, primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("state", Text, nullable=False),
)

# ---- runs and config -------------------------------------------------------------------
runs = Table(
    "rh_runs",
    metadata,
    Column("run_uuid", String(36), primary_key=True),
    Column("entity", String(64), nullable=False),
    Column("project", String(64), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("tags", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("exit_code", Integer),
    Column("version", Integer, nullable=False),
    Column("last_step", BigInteger),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("created_position", BigInteger, nullable=False),
    Column("updated_position", BigInteger, nullable=False),
    UniqueConstraint("entity", "project", "run_id", name="rh_runs_path"),
)

configs = Table(
    "rh_configs",
    metadata,
    Column("run_uuid", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("config", Text, nullable=False),
)

# ---- archive: every version of every run ----------------------------------------------
versions = Table(
    "rh_versions",
    metadata,
    Column("run_uuid", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("started_position", BigInteger, nullable=False),
    Column("archived_at", Float),
    Column("archived_position", BigInteger),
    Column("rewound_to_step", BigInteger),  # the step of the rewind that archived it
    Column("state", String(16), nullable=False),  # the run's state while this version was live
    Column("last_step", BigInteger),
    # The version's immutable ID (identity.version_id), by which readers and forks find it.
    Column("immutable_id", String(32), nullable=False),
    # The run's event (its number in the run's stream) that archived the version: the run
    # as it stood before that event is the version as it was archived.
    Column("archived_event", Integer),
    UniqueConstraint("immutable_id", name="rh_versions_immutable_id"),
)

# ---- lineage: fork edges ---------------------------------------------------------------
forks = Table(
    "rh_forks",
    metadata,
    Column("run_uuid", String(36), primary_key=True),
    Column("source_uuid", String(36), nullable=False),
    Column("source_version", Integer, nullable=False),
    Column("source_step", BigInteger, nullable=False),
    Column("forked_at", Float, nullable=False),
    Column("position", BigInteger, nullable=False),
)
Index("rh_forks_source", forks.c.source_uuid, forks.c.source_version)

# ---- artifacts -------------------------------------------------------------------------
artifacts = Table(
    "rh_artifacts",
    metadata,
    Column("position", BigInteger, primary_key=True),
    Column("run_uuid", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("direction", String(16), nullable=False),
    Column("name", String(256), nullable=False),
    Column("type", String(256), nullable=False),
    Column("digest", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("uri", Text, nullable=False),
    Column("recorded_at", Float, nullable=False),
)
Index("rh_artifacts_run", artifacts.c.run_uuid, artifacts.c.version)
