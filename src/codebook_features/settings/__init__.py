"""Settings and saved records on one declarative base (``base``: constraints on the fields,
strict for what people write, tolerant of files a newer version wrote), and the command-line
options and settings files generated from them (``options``)."""
