"""`discovery`: the command-line client of the engine, speaking gRPC through the client
library (discovery_client: the calls, their errors, and `watch`, which resumes the stream and
never repeats an event).

__main__.py    argument parsing, exit codes
config.py      where the engine is (--engine, DISCOVERY_ENGINE) and who the CLI is
errors.py      the exception tree and its exit codes
documents.py   what users hand in: workflow definitions, --input, --file
commands.py    one function per command
render.py      static output: tables, status, JSON
board.py       the steps' state `watch` folds from the events, and its lines
watch_view.py  what `watch` shows: live bars, plain lines or JSON lines
"""
