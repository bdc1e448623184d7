"""The one exception the exporter raises for anything the caller can fix."""


class ExportError(RuntimeError):
    """An export could not be written or did not prove equal to Keras; nothing was published."""
