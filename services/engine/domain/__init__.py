"""The engine's domain core: workflows, the execution state machine and its events.

Nothing here imports a transport or a driver (grpc, pymongo, aiohttp); a test keeps it so.
"""
