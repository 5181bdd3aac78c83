"""`discovery`: the command-line client of the engine, speaking gRPC.

__main__.py    argument parsing, exit codes
config.py      where the engine is (--engine, DISCOVERY_ENGINE)
errors.py      the exception tree and its exit codes
client.py      gRPC calls with deadlines; RPC errors become EngineError
documents.py   what users hand in: workflow definitions, --input, --file
commands.py    one function per command
render.py      static output: tables, status, JSON
follow.py      the watch loop: resumes the stream, never repeats an event
watch_view.py  what `watch` shows: live bars, plain lines or JSON lines
"""
