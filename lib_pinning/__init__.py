"""sd-prompt-pinning engine: importable and testable without the WebUI."""

__version__ = "0.1.0"
