import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TakeStepAttemptRequest(_message.Message):
    __slots__ = ("execution_id", "attempt_token", "runner_id")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RUNNER_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    attempt_token: str
    runner_id: str
    def __init__(self, execution_id: _Optional[str] = ..., attempt_token: _Optional[str] = ..., runner_id: _Optional[str] = ...) -> None: ...

class TakeStepAttemptResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: StepTask
    def __init__(self, task: _Optional[_Union[StepTask, _Mapping]] = ...) -> None: ...

class PollStepAttemptsRequest(_message.Message):
    __slots__ = ("runner_id", "handlers", "max_attempts", "wait_seconds")
    RUNNER_ID_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    runner_id: str
    handlers: _containers.RepeatedScalarFieldContainer[str]
    max_attempts: int
    wait_seconds: float
    def __init__(self, runner_id: _Optional[str] = ..., handlers: _Optional[_Iterable[str]] = ..., max_attempts: _Optional[int] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class StepTask(_message.Message):
    __slots__ = ("execution_id", "step_name", "handler", "attempt", "attempt_token", "input", "timeout_seconds", "heartbeat_timeout_seconds", "queue_time", "start_time", "traceparent")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    step_name: str
    handler: str
    attempt: int
    attempt_token: str
    input: _struct_pb2.Struct
    timeout_seconds: float
    heartbeat_timeout_seconds: float
    queue_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    traceparent: str
    def __init__(self, execution_id: _Optional[str] = ..., step_name: _Optional[str] = ..., handler: _Optional[str] = ..., attempt: _Optional[int] = ..., attempt_token: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout_seconds: _Optional[float] = ..., heartbeat_timeout_seconds: _Optional[float] = ..., queue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class PollStepAttemptsResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[StepTask]
    def __init__(self, tasks: _Optional[_Iterable[_Union[StepTask, _Mapping]]] = ...) -> None: ...

class GetStepQueueRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueueDepth(_message.Message):
    __slots__ = ("handler", "tenant", "ready", "oldest_queue_time")
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    OLDEST_QUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    handler: str
    tenant: str
    ready: int
    oldest_queue_time: _timestamp_pb2.Timestamp
    def __init__(self, handler: _Optional[str] = ..., tenant: _Optional[str] = ..., ready: _Optional[int] = ..., oldest_queue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class QueueRunner(_message.Message):
    __slots__ = ("runner_id", "handlers", "free_slots", "last_poll_time")
    RUNNER_ID_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    LAST_POLL_TIME_FIELD_NUMBER: _ClassVar[int]
    runner_id: str
    handlers: _containers.RepeatedScalarFieldContainer[str]
    free_slots: int
    last_poll_time: _timestamp_pb2.Timestamp
    def __init__(self, runner_id: _Optional[str] = ..., handlers: _Optional[_Iterable[str]] = ..., free_slots: _Optional[int] = ..., last_poll_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStepQueueResponse(_message.Message):
    __slots__ = ("tenant", "total", "runners")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    RUNNERS_FIELD_NUMBER: _ClassVar[int]
    tenant: _containers.RepeatedCompositeFieldContainer[QueueDepth]
    total: _containers.RepeatedCompositeFieldContainer[QueueDepth]
    runners: _containers.RepeatedCompositeFieldContainer[QueueRunner]
    def __init__(self, tenant: _Optional[_Iterable[_Union[QueueDepth, _Mapping]]] = ..., total: _Optional[_Iterable[_Union[QueueDepth, _Mapping]]] = ..., runners: _Optional[_Iterable[_Union[QueueRunner, _Mapping]]] = ...) -> None: ...
