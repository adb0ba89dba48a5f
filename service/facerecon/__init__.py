"""facerecon: one photograph of a face in, a 3D mesh and views at other angles out."""

__version__ = "0.1.0"
