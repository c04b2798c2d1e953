"""The TokFSM experiment: a transformer learns a finite state machine; its codes are states."""

from codebook_features._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "codebook_features.demos.fsm.machine": ["FSM"],
    },
)
