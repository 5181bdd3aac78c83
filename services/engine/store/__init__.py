"""Persistence: the repository interface and its MongoDB implementation."""
