"""Caffe's solvers (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) with ISGD on top; the CLI."""

from solvers.comm import Comm, SerialComm
from solvers.isgd import IsgdConfig, LossQueue
from solvers.solver import NonFiniteLossError, Solver

__all__ = ["Comm", "IsgdConfig", "LossQueue", "NonFiniteLossError", "SerialComm", "Solver"]
