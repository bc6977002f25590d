"""collector: trace mail across a fleet of Postfix servers."""

__version__ = "0.1.0"
