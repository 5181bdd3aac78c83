import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PENDING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_RUNNING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_WAITING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_COMPLETED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_CANCELLED: _ClassVar[ExecutionStatus]

class ExecutionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_MODE_UNSPECIFIED: _ClassVar[ExecutionMode]
    EXECUTION_MODE_AUTOMATIC: _ClassVar[ExecutionMode]
    EXECUTION_MODE_MANUAL: _ClassVar[ExecutionMode]

class AttemptStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_STATUS_UNSPECIFIED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_RUNNING: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_SUCCESS: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_FAILED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_TIMED_OUT: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_CANCELLED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_QUEUED: _ClassVar[AttemptStatus]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_STARTED: _ClassVar[EventType]
    EVENT_TYPE_STEP_STARTED: _ClassVar[EventType]
    EVENT_TYPE_STEP_PROGRESS: _ClassVar[EventType]
    EVENT_TYPE_STEP_FINISHED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_WAITING: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_ADVANCED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_COMPLETED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_FAILED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_CANCELLED: _ClassVar[EventType]
    EVENT_TYPE_STEP_QUEUED: _ClassVar[EventType]
    EVENT_TYPE_WORKFLOW_RETRIED: _ClassVar[EventType]
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_PENDING: ExecutionStatus
EXECUTION_STATUS_RUNNING: ExecutionStatus
EXECUTION_STATUS_WAITING: ExecutionStatus
EXECUTION_STATUS_COMPLETED: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
EXECUTION_STATUS_CANCELLED: ExecutionStatus
EXECUTION_MODE_UNSPECIFIED: ExecutionMode
EXECUTION_MODE_AUTOMATIC: ExecutionMode
EXECUTION_MODE_MANUAL: ExecutionMode
ATTEMPT_STATUS_UNSPECIFIED: AttemptStatus
ATTEMPT_STATUS_RUNNING: AttemptStatus
ATTEMPT_STATUS_SUCCESS: AttemptStatus
ATTEMPT_STATUS_FAILED: AttemptStatus
ATTEMPT_STATUS_TIMED_OUT: AttemptStatus
ATTEMPT_STATUS_CANCELLED: AttemptStatus
ATTEMPT_STATUS_QUEUED: AttemptStatus
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_WORKFLOW_STARTED: EventType
EVENT_TYPE_STEP_STARTED: EventType
EVENT_TYPE_STEP_PROGRESS: EventType
EVENT_TYPE_STEP_FINISHED: EventType
EVENT_TYPE_WORKFLOW_WAITING: EventType
EVENT_TYPE_WORKFLOW_ADVANCED: EventType
EVENT_TYPE_WORKFLOW_COMPLETED: EventType
EVENT_TYPE_WORKFLOW_FAILED: EventType
EVENT_TYPE_WORKFLOW_CANCELLED: EventType
EVENT_TYPE_STEP_QUEUED: EventType
EVENT_TYPE_WORKFLOW_RETRIED: EventType

class StepProgress(_message.Message):
    __slots__ = ("percentage", "message", "current_task", "estimated_remaining_seconds", "custom_data")
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TASK_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_REMAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_DATA_FIELD_NUMBER: _ClassVar[int]
    percentage: float
    message: str
    current_task: str
    estimated_remaining_seconds: float
    custom_data: _struct_pb2.Struct
    def __init__(self, percentage: _Optional[float] = ..., message: _Optional[str] = ..., current_task: _Optional[str] = ..., estimated_remaining_seconds: _Optional[float] = ..., custom_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class StepError(_message.Message):
    __slots__ = ("reason", "type", "message", "step_name")
    REASON_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    reason: str
    type: str
    message: str
    step_name: str
    def __init__(self, reason: _Optional[str] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., step_name: _Optional[str] = ...) -> None: ...

class StepAttempt(_message.Message):
    __slots__ = ("step_name", "order", "attempt", "status", "start_time", "finish_time", "duration_seconds", "input_payload", "output_payload", "error", "last_progress", "queue_time", "runner_id", "superseded")
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INPUT_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    RUNNER_ID_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    step_name: str
    order: int
    attempt: int
    status: AttemptStatus
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    duration_seconds: float
    input_payload: _struct_pb2.Struct
    output_payload: _struct_pb2.Struct
    error: StepError
    last_progress: StepProgress
    queue_time: _timestamp_pb2.Timestamp
    runner_id: str
    superseded: bool
    def __init__(self, step_name: _Optional[str] = ..., order: _Optional[int] = ..., attempt: _Optional[int] = ..., status: _Optional[_Union[AttemptStatus, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_seconds: _Optional[float] = ..., input_payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output_payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[_Union[StepError, _Mapping]] = ..., last_progress: _Optional[_Union[StepProgress, _Mapping]] = ..., queue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runner_id: _Optional[str] = ..., superseded: _Optional[bool] = ...) -> None: ...

class CurrentStep(_message.Message):
    __slots__ = ("step_id", "name", "order")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    name: str
    order: int
    def __init__(self, step_id: _Optional[str] = ..., name: _Optional[str] = ..., order: _Optional[int] = ...) -> None: ...

class ExecutionProgress(_message.Message):
    __slots__ = ("total_steps", "completed_steps", "failed_steps", "percentage", "estimated_remaining_seconds", "is_completed", "is_failed", "is_running")
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_STEPS_FIELD_NUMBER: _ClassVar[int]
    FAILED_STEPS_FIELD_NUMBER: _ClassVar[int]
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_REMAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    IS_FAILED_FIELD_NUMBER: _ClassVar[int]
    IS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    total_steps: int
    completed_steps: int
    failed_steps: int
    percentage: float
    estimated_remaining_seconds: float
    is_completed: bool
    is_failed: bool
    is_running: bool
    def __init__(self, total_steps: _Optional[int] = ..., completed_steps: _Optional[int] = ..., failed_steps: _Optional[int] = ..., percentage: _Optional[float] = ..., estimated_remaining_seconds: _Optional[float] = ..., is_completed: _Optional[bool] = ..., is_failed: _Optional[bool] = ..., is_running: _Optional[bool] = ...) -> None: ...

class Execution(_message.Message):
    __slots__ = ("execution_id", "workflow_id", "workflow_name", "status", "mode", "create_time", "update_time", "input", "dynamic_properties", "current_step", "progress", "steps_history", "last_seq", "error", "priority", "running_steps", "workflow_version", "retries")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STEP_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STEPS_HISTORY_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_STEPS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    workflow_id: str
    workflow_name: str
    status: ExecutionStatus
    mode: ExecutionMode
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    input: _struct_pb2.Struct
    dynamic_properties: _struct_pb2.Struct
    current_step: CurrentStep
    progress: ExecutionProgress
    steps_history: _containers.RepeatedCompositeFieldContainer[StepAttempt]
    last_seq: int
    error: StepError
    priority: int
    running_steps: _containers.RepeatedCompositeFieldContainer[CurrentStep]
    workflow_version: int
    retries: int
    def __init__(self, execution_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., workflow_name: _Optional[str] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., mode: _Optional[_Union[ExecutionMode, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dynamic_properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., current_step: _Optional[_Union[CurrentStep, _Mapping]] = ..., progress: _Optional[_Union[ExecutionProgress, _Mapping]] = ..., steps_history: _Optional[_Iterable[_Union[StepAttempt, _Mapping]]] = ..., last_seq: _Optional[int] = ..., error: _Optional[_Union[StepError, _Mapping]] = ..., priority: _Optional[int] = ..., running_steps: _Optional[_Iterable[_Union[CurrentStep, _Mapping]]] = ..., workflow_version: _Optional[int] = ..., retries: _Optional[int] = ...) -> None: ...

class ExecutionEvent(_message.Message):
    __slots__ = ("execution_id", "seq", "type", "time", "data")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    seq: int
    type: EventType
    time: _timestamp_pb2.Timestamp
    data: _struct_pb2.Struct
    def __init__(self, execution_id: _Optional[str] = ..., seq: _Optional[int] = ..., type: _Optional[_Union[EventType, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
