"""Secret lives in the domain (typed load messages carry it); re-exported for old imports."""

from extsock_py.domain.secret import Secret

__all__ = ["Secret"]
