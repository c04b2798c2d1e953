"""The TokFSM experiment: a transformer learns a finite state machine; its codes are states."""

from codebook_features.demos.fsm.machine import FSM

__all__ = ["FSM"]
