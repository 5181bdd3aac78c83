from discovery.engine.v1 import execution_pb2 as _execution_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportStepProgressRequest(_message.Message):
    __slots__ = ("execution_id", "step_name", "attempt_token", "progress", "more_progress")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MORE_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    step_name: str
    attempt_token: str
    progress: _execution_pb2.StepProgress
    more_progress: _containers.RepeatedCompositeFieldContainer[_execution_pb2.StepProgress]
    def __init__(self, execution_id: _Optional[str] = ..., step_name: _Optional[str] = ..., attempt_token: _Optional[str] = ..., progress: _Optional[_Union[_execution_pb2.StepProgress, _Mapping]] = ..., more_progress: _Optional[_Iterable[_Union[_execution_pb2.StepProgress, _Mapping]]] = ...) -> None: ...

class ReportStepProgressResponse(_message.Message):
    __slots__ = ("cancel_requested",)
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    cancel_requested: bool
    def __init__(self, cancel_requested: _Optional[bool] = ...) -> None: ...

class CompleteStepRequest(_message.Message):
    __slots__ = ("execution_id", "step_name", "attempt_token", "success", "result", "error", "progress")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    step_name: str
    attempt_token: str
    success: bool
    result: _struct_pb2.Struct
    error: _execution_pb2.StepError
    progress: _containers.RepeatedCompositeFieldContainer[_execution_pb2.StepProgress]
    def __init__(self, execution_id: _Optional[str] = ..., step_name: _Optional[str] = ..., attempt_token: _Optional[str] = ..., success: _Optional[bool] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[_Union[_execution_pb2.StepError, _Mapping]] = ..., progress: _Optional[_Iterable[_Union[_execution_pb2.StepProgress, _Mapping]]] = ...) -> None: ...

class CompleteStepResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReadBlobRequest(_message.Message):
    __slots__ = ("execution_id", "attempt_token", "blob_id")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    attempt_token: str
    blob_id: str
    def __init__(self, execution_id: _Optional[str] = ..., attempt_token: _Optional[str] = ..., blob_id: _Optional[str] = ...) -> None: ...

class ReadBlobResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class WriteBlobHeader(_message.Message):
    __slots__ = ("execution_id", "attempt_token")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    attempt_token: str
    def __init__(self, execution_id: _Optional[str] = ..., attempt_token: _Optional[str] = ...) -> None: ...

class WriteBlobRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: WriteBlobHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[WriteBlobHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class WriteBlobResponse(_message.Message):
    __slots__ = ("blob_id", "size_bytes", "sha256")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    size_bytes: int
    sha256: str
    def __init__(self, blob_id: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...
