from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartStepRequest(_message.Message):
    __slots__ = ("execution_id", "step_name", "handler", "attempt", "attempt_token", "input", "timeout_seconds", "heartbeat_timeout_seconds")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    step_name: str
    handler: str
    attempt: int
    attempt_token: str
    input: _struct_pb2.Struct
    timeout_seconds: float
    heartbeat_timeout_seconds: float
    def __init__(self, execution_id: _Optional[str] = ..., step_name: _Optional[str] = ..., handler: _Optional[str] = ..., attempt: _Optional[int] = ..., attempt_token: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout_seconds: _Optional[float] = ..., heartbeat_timeout_seconds: _Optional[float] = ...) -> None: ...

class StartStepResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CancelStepRequest(_message.Message):
    __slots__ = ("execution_id", "step_name", "attempt_token")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    step_name: str
    attempt_token: str
    def __init__(self, execution_id: _Optional[str] = ..., step_name: _Optional[str] = ..., attempt_token: _Optional[str] = ...) -> None: ...

class CancelStepResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListHandlersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Handler(_message.Message):
    __slots__ = ("name", "description", "input_keys")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_KEYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    input_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., input_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class ListHandlersResponse(_message.Message):
    __slots__ = ("handlers",)
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    handlers: _containers.RepeatedCompositeFieldContainer[Handler]
    def __init__(self, handlers: _Optional[_Iterable[_Union[Handler, _Mapping]]] = ...) -> None: ...
