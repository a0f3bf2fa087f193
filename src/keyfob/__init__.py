"""keyfob: a credential vault for AI agents."""

__version__ = "0.1.0"
