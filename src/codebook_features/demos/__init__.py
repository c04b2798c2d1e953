"""The two demos, clients of the library's public API: the paper's TokFSM experiment (``fsm``)
and the offline language demo (``lm``), both run by the resumable stage runner (``runner``)."""
