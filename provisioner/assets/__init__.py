"""Installer files this server holds and serves itself: ``ASSETS_DIR`` and ``/assets/``.

``files`` confines a request to the directory, ``http`` decides what a request gets (the
HTTP rules for big files: HEAD, Range, conditional requests), ``sender`` has the bytes sent
with ``os.sendfile`` by a process of its own (``sendloop``), and ``fetch`` downloads a
workflow's upstream files into the directory with their checksums checked.
"""
