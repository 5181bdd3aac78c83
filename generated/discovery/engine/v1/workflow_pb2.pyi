import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "initial_backoff_seconds", "backoff_multiplier", "max_backoff_seconds")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    initial_backoff_seconds: float
    backoff_multiplier: float
    max_backoff_seconds: float
    def __init__(self, max_attempts: _Optional[int] = ..., initial_backoff_seconds: _Optional[float] = ..., backoff_multiplier: _Optional[float] = ..., max_backoff_seconds: _Optional[float] = ...) -> None: ...

class StepDefinition(_message.Message):
    __slots__ = ("step_id", "name", "handler", "timeout_seconds", "heartbeat_timeout_seconds", "retry", "schedule_to_start_timeout_seconds", "after")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_TO_START_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    name: str
    handler: str
    timeout_seconds: float
    heartbeat_timeout_seconds: float
    retry: RetryPolicy
    schedule_to_start_timeout_seconds: float
    after: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, step_id: _Optional[str] = ..., name: _Optional[str] = ..., handler: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., heartbeat_timeout_seconds: _Optional[float] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., schedule_to_start_timeout_seconds: _Optional[float] = ..., after: _Optional[_Iterable[str]] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("workflow_id", "name", "description", "steps", "create_time", "input_schema", "max_parallel_steps", "version", "update_time")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_STEPS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    name: str
    description: str
    steps: _containers.RepeatedCompositeFieldContainer[StepDefinition]
    create_time: _timestamp_pb2.Timestamp
    input_schema: _struct_pb2.Struct
    max_parallel_steps: int
    version: int
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, workflow_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[StepDefinition, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., max_parallel_steps: _Optional[int] = ..., version: _Optional[int] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
