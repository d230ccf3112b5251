"""spinenode's DICOM receiver: C-STORE SCP, ingest, study assembly, routing, the scheduler, admin HTTP."""

__version__ = "0.1.0"
