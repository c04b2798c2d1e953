"""Settings and saved records: files and command-line options to typed settings (``configs``),
and reading back what an older or newer version saved (``saved``)."""
