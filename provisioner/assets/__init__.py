"""Installer files this server holds and serves itself: ``ASSETS_DIR`` and ``/assets/``.

``files`` confines a request to the directory, ``http`` decides what a request gets (the
HTTP rules for big files: HEAD, Range, conditional requests), ``sender`` sends the bytes
with ``os.sendfile`` from threads of its own, and ``fetch`` downloads a workflow's upstream
files into the directory with their checksums checked.
"""
