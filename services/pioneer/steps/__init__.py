"""Pioneer's built-in steps; importing this package registers them in the default registry."""

from services.pioneer.steps import builtin, documents

__all__ = ["builtin", "documents"]
