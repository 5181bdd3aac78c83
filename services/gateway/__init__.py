"""The gateway: the legacy REST, WebSocket and SSE API of Discovery, on the engine's gRPC API,
and the live dashboard at `/` (pages.py; static files in dashboard/).

`python -m services.gateway` (see __main__.py). Configuration, read once at start (config.py);
a bad value stops it naming the variable:

    GATEWAY_HOST / GATEWAY_PORT          127.0.0.1 / 8080
    ENGINE_URL (or DISCOVERY_ENGINE)     localhost:50051; http://host:port is accepted
    GATEWAY_MAX_BODY_BYTES               67108864 (64 MiB), counted after gzip/deflate
    GATEWAY_MAX_JSON_DEPTH               32 (and at most: what the engine and protobuf take)
    GATEWAY_RPC_TIMEOUT_SECONDS          10, the deadline of every unary engine call
    GATEWAY_SYNC_WAIT_SECONDS            30, the bound of POST /execute/ (at most 300)
    GATEWAY_WATCH_SEGMENT_SECONDS        300, deadline of one WatchExecution call (resumed)
    GATEWAY_WATCH_RETRY_SECONDS          30, how long a stream waits for an engine to return
    GATEWAY_WS_HEARTBEAT_SECONDS         20, WebSocket pings (and SSE keep-alive comments)
    GATEWAY_WS_MAX_MESSAGE_BYTES         65536, the largest client frame (else close 1009)
    GATEWAY_WS_ALLOWED_ORIGINS           empty (any); comma-separated browser origins
    GATEWAY_STREAM_QUEUE_MESSAGES/_BYTES 1000 / 4 MiB per socket; over it, close 1013
    GATEWAY_STREAM_SNAPSHOT_BYTES        1 MiB; a bigger snapshot comes as a pointer
    GATEWAY_STREAM_SEND_BUFFER_BYTES     262144, kernel send buffer of a live stream's socket
    GATEWAY_FEED_RING_MESSAGES/_BYTES    256 / 2 MiB recent events kept per followed execution
    GATEWAY_MAX_STREAMS / _PER_CLIENT    10000 / 1000 live streams; over it, 429
    GATEWAY_ENGINE_MAX_MESSAGE_BYTES     83886080
    GATEWAY_SHUTDOWN_SECONDS             10
"""
