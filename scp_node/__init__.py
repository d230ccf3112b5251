"""spinenode PACS-facing node: DICOM receiver, durable spool, study assembly, queueing, admin."""

__version__ = "0.1.0"
