"""tsd-edge: distil a teacher into a small task-specific student, compile it, gate it.

The import package is deliberately light: importing ``tsd_edge`` pulls in no torch,
transformers or runtime. Heavy libraries are imported inside the functions that need them.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
