"""Files on disk: their names and layouts (``files``), which directories are ours to write
(``ownership``), checksums, run directories (``rundir``), and loading saved models and
tokenizers (``sources``, ``model_files``, ``loading``)."""
