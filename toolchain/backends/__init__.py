"""Backend registry: each module in this package registers one backend on import."""

from ..registry import Registry
from .base import Backend

BACKENDS: Registry[Backend] = Registry("backend", __name__)
register = BACKENDS.register
names = BACKENDS.names
get = BACKENDS.get
