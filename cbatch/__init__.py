"""cbatch: run every Torque/PBS job inside its admin-pinned container."""

__version__ = "0.1.0"
