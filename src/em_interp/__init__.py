"""em-interp: mechanistic interpretability of emergent misalignment.

Data flows one way: data -> train -> eval -> interp -> report. Each stage is a
subpackage with a Python API and an `em-interp` sub-command.
"""

__version__ = "0.1.0"
