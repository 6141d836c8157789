"""Model runtimes: one module per model format, all behind the Runtime interface in ``base``."""
