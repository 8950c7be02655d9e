"""Dataset tools: locate the MNIST/CIFAR-10 originals and write Caffe Datum LMDBs in FCPR order.

Run a tool with `python -m data_tools <tool> ...` (see `python -m data_tools --help`).
"""

from engine.errors import DataError

__all__ = ["DataError"]
