"""Refuse oversized import uploads early, without storing them."""

from __future__ import annotations

from django.core.files.uploadhandler import FileUploadHandler, StopUpload

# Room for the other form fields and multipart boundaries around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


class ImportSizeLimitHandler(FileUploadHandler):
    """Stops reading an upload once it is over ``limit`` bytes and records its size on the
    request (``request.import_upload_too_large``). The rest of the body is read and thrown
    away, so that the browser still gets our answer instead of a reset connection.

    Must be installed before anything reads ``request.POST`` (see ``install``).
    """

    def __init__(self, request=None, *, limit: int):
        super().__init__(request)
        self.limit = limit

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):  # noqa: N803
        if content_length and content_length > self.limit + FORM_OVERHEAD_BYTES:
            self.request.import_upload_too_large = content_length
        return None

    def receive_data_chunk(self, raw_data, start):
        received = start + len(raw_data)
        if getattr(self.request, "import_upload_too_large", None) or received > self.limit:
            self.request.import_upload_too_large = max(
                received, getattr(self.request, "import_upload_too_large", 0) or 0
            )
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size):
        return None


def install(request, *, limit: int) -> None:
    request.import_upload_too_large = None
    request.upload_handlers.insert(0, ImportSizeLimitHandler(request, limit=limit))
