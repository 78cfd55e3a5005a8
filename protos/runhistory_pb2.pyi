from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Value(_message.Message):
    __slots__ = ("float_value", "int_value", "bool_value", "string_value", "null_value")
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    float_value: float
    int_value: int
    bool_value: bool
    string_value: str
    null_value: bool
    def __init__(self, float_value: _Optional[float] = ..., int_value: _Optional[int] = ..., bool_value: _Optional[bool] = ..., string_value: _Optional[str] = ..., null_value: _Optional[bool] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("step", "timestamp", "runtime", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    step: int
    timestamp: float
    runtime: float
    values: _containers.MessageMap[str, Value]
    def __init__(self, step: _Optional[int] = ..., timestamp: _Optional[float] = ..., runtime: _Optional[float] = ..., values: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class Branch(_message.Message):
    __slots__ = ("mode", "point")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[Branch.Mode]
        REWIND: _ClassVar[Branch.Mode]
        FORK: _ClassVar[Branch.Mode]
    MODE_UNSPECIFIED: Branch.Mode
    REWIND: Branch.Mode
    FORK: Branch.Mode
    MODE_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    mode: Branch.Mode
    point: str
    def __init__(self, mode: _Optional[_Union[Branch.Mode, str]] = ..., point: _Optional[str] = ...) -> None: ...

class InitRequest(_message.Message):
    __slots__ = ("entity", "project", "run_id", "name", "tags", "config_json", "resume", "branch", "started_at", "notes", "group", "job_type")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    entity: str
    project: str
    run_id: str
    name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    config_json: str
    resume: str
    branch: Branch
    started_at: float
    notes: str
    group: str
    job_type: str
    def __init__(self, entity: _Optional[str] = ..., project: _Optional[str] = ..., run_id: _Optional[str] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., config_json: _Optional[str] = ..., resume: _Optional[str] = ..., branch: _Optional[_Union[Branch, _Mapping]] = ..., started_at: _Optional[float] = ..., notes: _Optional[str] = ..., group: _Optional[str] = ..., job_type: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("path", "writer", "version", "next_step", "position", "config_json", "forked_from", "immutable_id", "web_url", "name", "tags", "notes", "group", "job_type", "resumed", "limits")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NEXT_STEP_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_ID_FIELD_NUMBER: _ClassVar[int]
    WEB_URL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer: str
    version: int
    next_step: int
    position: int
    config_json: str
    forked_from: ForkedFrom
    immutable_id: str
    web_url: str
    name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    notes: str
    group: str
    job_type: str
    resumed: bool
    limits: Limits
    def __init__(self, path: _Optional[str] = ..., writer: _Optional[str] = ..., version: _Optional[int] = ..., next_step: _Optional[int] = ..., position: _Optional[int] = ..., config_json: _Optional[str] = ..., forked_from: _Optional[_Union[ForkedFrom, _Mapping]] = ..., immutable_id: _Optional[str] = ..., web_url: _Optional[str] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., notes: _Optional[str] = ..., group: _Optional[str] = ..., job_type: _Optional[str] = ..., resumed: _Optional[bool] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_key_length", "max_keys_per_row", "max_row_bytes", "max_request_bytes", "max_depth", "max_calls_per_batch")
    MAX_KEY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_KEYS_PER_ROW_FIELD_NUMBER: _ClassVar[int]
    MAX_ROW_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_PER_BATCH_FIELD_NUMBER: _ClassVar[int]
    max_key_length: int
    max_keys_per_row: int
    max_row_bytes: int
    max_request_bytes: int
    max_depth: int
    max_calls_per_batch: int
    def __init__(self, max_key_length: _Optional[int] = ..., max_keys_per_row: _Optional[int] = ..., max_row_bytes: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_depth: _Optional[int] = ..., max_calls_per_batch: _Optional[int] = ...) -> None: ...

class ForkedFrom(_message.Message):
    __slots__ = ("run", "step", "version", "immutable_id")
    RUN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_ID_FIELD_NUMBER: _ClassVar[int]
    run: str
    step: int
    version: int
    immutable_id: str
    def __init__(self, run: _Optional[str] = ..., step: _Optional[int] = ..., version: _Optional[int] = ..., immutable_id: _Optional[str] = ...) -> None: ...

class LogCall(_message.Message):
    __slots__ = ("data", "timestamp", "step", "commit")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    data: _containers.MessageMap[str, Value]
    timestamp: float
    step: int
    commit: bool
    def __init__(self, data: _Optional[_Mapping[str, Value]] = ..., timestamp: _Optional[float] = ..., step: _Optional[int] = ..., commit: _Optional[bool] = ...) -> None: ...

class LogBatch(_message.Message):
    __slots__ = ("path", "writer", "seq", "calls", "calls_json", "drop_refused_calls")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    CALLS_JSON_FIELD_NUMBER: _ClassVar[int]
    DROP_REFUSED_CALLS_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer: str
    seq: int
    calls: _containers.RepeatedCompositeFieldContainer[LogCall]
    calls_json: bytes
    drop_refused_calls: bool
    def __init__(self, path: _Optional[str] = ..., writer: _Optional[str] = ..., seq: _Optional[int] = ..., calls: _Optional[_Iterable[_Union[LogCall, _Mapping]]] = ..., calls_json: _Optional[bytes] = ..., drop_refused_calls: _Optional[bool] = ...) -> None: ...

class LogAck(_message.Message):
    __slots__ = ("seq", "position", "applied", "next_step", "rows", "warnings")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    NEXT_STEP_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    position: int
    applied: bool
    next_step: int
    rows: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, seq: _Optional[int] = ..., position: _Optional[int] = ..., applied: _Optional[bool] = ..., next_step: _Optional[int] = ..., rows: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("position", "applied")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    position: int
    applied: bool
    def __init__(self, position: _Optional[int] = ..., applied: _Optional[bool] = ...) -> None: ...

class UpdateConfigRequest(_message.Message):
    __slots__ = ("path", "writer", "seq", "config_json")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer: str
    seq: int
    config_json: str
    def __init__(self, path: _Optional[str] = ..., writer: _Optional[str] = ..., seq: _Optional[int] = ..., config_json: _Optional[str] = ...) -> None: ...

class SetSummaryRequest(_message.Message):
    __slots__ = ("path", "writer", "seq", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer: str
    seq: int
    values: _containers.MessageMap[str, Value]
    def __init__(self, path: _Optional[str] = ..., writer: _Optional[str] = ..., seq: _Optional[int] = ..., values: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class DefineMetricRequest(_message.Message):
    __slots__ = ("path", "writer", "seq", "key", "summary")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer: str
    seq: int
    key: str
    summary: str
    def __init__(self, path: _Optional[str] = ..., writer: _Optional[str] = ..., seq: _Optional[int] = ..., key: _Optional[str] = ..., summary: _Optional[str] = ...) -> None: ...

class UpdateDetailsRequest(_message.Message):
    __slots__ = ("path", "writer", "seq", "name", "tags", "notes", "group", "job_type")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer: str
    seq: int
    name: str
    tags: Tags
    notes: str
    group: str
    job_type: str
    def __init__(self, path: _Optional[str] = ..., writer: _Optional[str] = ..., seq: _Optional[int] = ..., name: _Optional[str] = ..., tags: _Optional[_Union[Tags, _Mapping]] = ..., notes: _Optional[str] = ..., group: _Optional[str] = ..., job_type: _Optional[str] = ...) -> None: ...

class Tags(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordArtifactRequest(_message.Message):
    __slots__ = ("path", "writer", "seq", "direction", "name", "type", "digest", "size", "uri")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer: str
    seq: int
    direction: str
    name: str
    type: str
    digest: str
    size: int
    uri: str
    def __init__(self, path: _Optional[str] = ..., writer: _Optional[str] = ..., seq: _Optional[int] = ..., direction: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., uri: _Optional[str] = ...) -> None: ...

class FinishRequest(_message.Message):
    __slots__ = ("path", "writer", "seq", "exit_code")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer: str
    seq: int
    exit_code: int
    def __init__(self, path: _Optional[str] = ..., writer: _Optional[str] = ..., seq: _Optional[int] = ..., exit_code: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("path", "writer")
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    path: str
    writer: str
    def __init__(self, path: _Optional[str] = ..., writer: _Optional[str] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("state", "revived", "position", "crash_after")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REVIVED_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    CRASH_AFTER_FIELD_NUMBER: _ClassVar[int]
    state: str
    revived: bool
    position: int
    crash_after: float
    def __init__(self, state: _Optional[str] = ..., revived: _Optional[bool] = ..., position: _Optional[int] = ..., crash_after: _Optional[float] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("path", "version", "min_position")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    path: str
    version: int
    min_position: int
    def __init__(self, path: _Optional[str] = ..., version: _Optional[int] = ..., min_position: _Optional[int] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("path", "entity", "project", "run_id", "name", "tags", "state", "version", "last_step", "created_at", "updated_at", "forked_from", "exit_code", "immutable_id", "archived", "notes", "group", "job_type", "web_url")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_ID_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    WEB_URL_FIELD_NUMBER: _ClassVar[int]
    path: str
    entity: str
    project: str
    run_id: str
    name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    state: str
    version: int
    last_step: int
    created_at: float
    updated_at: float
    forked_from: ForkedFrom
    exit_code: int
    immutable_id: str
    archived: bool
    notes: str
    group: str
    job_type: str
    web_url: str
    def __init__(self, path: _Optional[str] = ..., entity: _Optional[str] = ..., project: _Optional[str] = ..., run_id: _Optional[str] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., version: _Optional[int] = ..., last_step: _Optional[int] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., forked_from: _Optional[_Union[ForkedFrom, _Mapping]] = ..., exit_code: _Optional[int] = ..., immutable_id: _Optional[str] = ..., archived: _Optional[bool] = ..., notes: _Optional[str] = ..., group: _Optional[str] = ..., job_type: _Optional[str] = ..., web_url: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("entity", "project", "min_position", "page_size", "cursor", "order", "filter", "with_total")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_TOTAL_FIELD_NUMBER: _ClassVar[int]
    entity: str
    project: str
    min_position: int
    page_size: int
    cursor: str
    order: str
    filter: RunFilter
    with_total: bool
    def __init__(self, entity: _Optional[str] = ..., project: _Optional[str] = ..., min_position: _Optional[int] = ..., page_size: _Optional[int] = ..., cursor: _Optional[str] = ..., order: _Optional[str] = ..., filter: _Optional[_Union[RunFilter, _Mapping]] = ..., with_total: _Optional[bool] = ...) -> None: ...

class RunFilter(_message.Message):
    __slots__ = ("states", "tags", "run_id", "run_id_regex", "name", "name_regex")
    STATES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_REGEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_REGEX_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    run_id: str
    run_id_regex: str
    name: str
    name_regex: str
    def __init__(self, states: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., run_id: _Optional[str] = ..., run_id_regex: _Optional[str] = ..., name: _Optional[str] = ..., name_regex: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_cursor", "total")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    next_cursor: str
    total: int
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("path", "keys", "min_step", "max_step", "own_only", "version", "min_position")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MIN_STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_STEP_FIELD_NUMBER: _ClassVar[int]
    OWN_ONLY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MIN_POSITION_FIELD_NUMBER: _ClassVar[int]
    path: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    min_step: int
    max_step: int
    own_only: bool
    version: int
    min_position: int
    def __init__(self, path: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., min_step: _Optional[int] = ..., max_step: _Optional[int] = ..., own_only: _Optional[bool] = ..., version: _Optional[int] = ..., min_position: _Optional[int] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("key", "steps", "floats", "ints", "json")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FLOATS_FIELD_NUMBER: _ClassVar[int]
    INTS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    key: str
    steps: bytes
    floats: bytes
    ints: bytes
    json: bytes
    def __init__(self, key: _Optional[str] = ..., steps: _Optional[bytes] = ..., floats: _Optional[bytes] = ..., ints: _Optional[bytes] = ..., json: _Optional[bytes] = ...) -> None: ...

class HistoryChunk(_message.Message):
    __slots__ = ("series", "upto_step")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    UPTO_STEP_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[Series]
    upto_step: int
    def __init__(self, series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ..., upto_step: _Optional[int] = ...) -> None: ...

class JsonDocument(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class Version(_message.Message):
    __slots__ = ("version", "archived", "rewound_to_step", "started_at", "archived_at", "state", "last_step", "rows", "summary_json", "config_json", "immutable_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    REWOUND_TO_STEP_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    archived: bool
    rewound_to_step: int
    started_at: float
    archived_at: float
    state: str
    last_step: int
    rows: int
    summary_json: str
    config_json: str
    immutable_id: str
    def __init__(self, version: _Optional[int] = ..., archived: _Optional[bool] = ..., rewound_to_step: _Optional[int] = ..., started_at: _Optional[float] = ..., archived_at: _Optional[float] = ..., state: _Optional[str] = ..., last_step: _Optional[int] = ..., rows: _Optional[int] = ..., summary_json: _Optional[str] = ..., config_json: _Optional[str] = ..., immutable_id: _Optional[str] = ...) -> None: ...

class VersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Version]
    def __init__(self, versions: _Optional[_Iterable[_Union[Version, _Mapping]]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("position", "version", "direction", "name", "type", "digest", "size", "uri", "recorded_at")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    position: int
    version: int
    direction: str
    name: str
    type: str
    digest: str
    size: int
    uri: str
    recorded_at: float
    def __init__(self, position: _Optional[int] = ..., version: _Optional[int] = ..., direction: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., uri: _Optional[str] = ..., recorded_at: _Optional[float] = ...) -> None: ...

class ArtifactsResponse(_message.Message):
    __slots__ = ("artifacts",)
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    def __init__(self, artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ...) -> None: ...

class Ancestor(_message.Message):
    __slots__ = ("run", "version", "step", "immutable_id")
    RUN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_ID_FIELD_NUMBER: _ClassVar[int]
    run: str
    version: int
    step: int
    immutable_id: str
    def __init__(self, run: _Optional[str] = ..., version: _Optional[int] = ..., step: _Optional[int] = ..., immutable_id: _Optional[str] = ...) -> None: ...

class LineageVersion(_message.Message):
    __slots__ = ("version", "archived", "rewound_to_step", "immutable_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    REWOUND_TO_STEP_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    archived: bool
    rewound_to_step: int
    immutable_id: str
    def __init__(self, version: _Optional[int] = ..., archived: _Optional[bool] = ..., rewound_to_step: _Optional[int] = ..., immutable_id: _Optional[str] = ...) -> None: ...

class Descendant(_message.Message):
    __slots__ = ("run", "source_version", "step", "descendants")
    RUN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    DESCENDANTS_FIELD_NUMBER: _ClassVar[int]
    run: str
    source_version: int
    step: int
    descendants: _containers.RepeatedCompositeFieldContainer[Descendant]
    def __init__(self, run: _Optional[str] = ..., source_version: _Optional[int] = ..., step: _Optional[int] = ..., descendants: _Optional[_Iterable[_Union[Descendant, _Mapping]]] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("run", "version", "ancestors", "versions", "descendants", "immutable_id")
    RUN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ANCESTORS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DESCENDANTS_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_ID_FIELD_NUMBER: _ClassVar[int]
    run: str
    version: int
    ancestors: _containers.RepeatedCompositeFieldContainer[Ancestor]
    versions: _containers.RepeatedCompositeFieldContainer[LineageVersion]
    descendants: _containers.RepeatedCompositeFieldContainer[Descendant]
    immutable_id: str
    def __init__(self, run: _Optional[str] = ..., version: _Optional[int] = ..., ancestors: _Optional[_Iterable[_Union[Ancestor, _Mapping]]] = ..., versions: _Optional[_Iterable[_Union[LineageVersion, _Mapping]]] = ..., descendants: _Optional[_Iterable[_Union[Descendant, _Mapping]]] = ..., immutable_id: _Optional[str] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("start", "path", "follow")
    START_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    start: int
    path: str
    follow: bool
    def __init__(self, start: _Optional[int] = ..., path: _Optional[str] = ..., follow: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("position", "run_uuid", "run_event", "type", "timestamp", "payload_json")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RUN_UUID_FIELD_NUMBER: _ClassVar[int]
    RUN_EVENT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    position: int
    run_uuid: str
    run_event: int
    type: str
    timestamp: float
    payload_json: str
    def __init__(self, position: _Optional[int] = ..., run_uuid: _Optional[str] = ..., run_event: _Optional[int] = ..., type: _Optional[str] = ..., timestamp: _Optional[float] = ..., payload_json: _Optional[str] = ...) -> None: ...

class AsOfRequest(_message.Message):
    __slots__ = ("path", "position", "time", "history")
    PATH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    path: str
    position: int
    time: float
    history: HistoryRequest
    def __init__(self, path: _Optional[str] = ..., position: _Optional[int] = ..., time: _Optional[float] = ..., history: _Optional[_Union[HistoryRequest, _Mapping]] = ...) -> None: ...

class AsOfResponse(_message.Message):
    __slots__ = ("rows", "summary_json", "config_json")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[Row]
    summary_json: str
    config_json: str
    def __init__(self, rows: _Optional[_Iterable[_Union[Row, _Mapping]]] = ..., summary_json: _Optional[str] = ..., config_json: _Optional[str] = ...) -> None: ...

class RebuildRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RebuildProgress(_message.Message):
    __slots__ = ("applied", "position", "target", "done", "checksums", "equal_to_live")
    class ChecksumsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUMS_FIELD_NUMBER: _ClassVar[int]
    EQUAL_TO_LIVE_FIELD_NUMBER: _ClassVar[int]
    applied: int
    position: int
    target: int
    done: bool
    checksums: _containers.ScalarMap[str, str]
    equal_to_live: bool
    def __init__(self, applied: _Optional[int] = ..., position: _Optional[int] = ..., target: _Optional[int] = ..., done: _Optional[bool] = ..., checksums: _Optional[_Mapping[str, str]] = ..., equal_to_live: _Optional[bool] = ...) -> None: ...
