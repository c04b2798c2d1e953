"""Files on disk: every file name and atomic writes (``files``), which directories are ours to
write (``ownership``), checksums, run directories (``rundir``), and where saved models and
tokenizers come from and whether they are intact (``sources``, ``model_files``; loading them is
``attach.loading``)."""
