"""A pynetdicom SCU that sends files byte for byte (chunked), for malformed-input tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification


def write_raw(path: Path, sop_class: str, sop_instance: str, transfer_syntax: str, body: bytes) -> Path:
    """A Part 10 file whose file meta is valid and whose data set is ``body`` verbatim."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    with path.open("wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, meta, enforce_standard=True)  # type: ignore[arg-type]
        fh.write(body)
    return path


def send_raw(
    port: int, files: Sequence[Path], contexts: Sequence[tuple[str, str]], called_ae: str = "SPINENODE",
    calling_ae: str = "RAWSCU",
) -> list[int]:
    """C-STORE each file's bytes as they are; returns the status of each (-1: no response)."""
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title=calling_ae)
        ae.add_requested_context(Verification)
        for sop_class, ts in sorted(set(contexts)):
            ae.add_requested_context(sop_class, [ts])
        assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
        assert assoc.is_established, "association refused"
        statuses = []
        try:
            for f in files:
                rsp = assoc.send_c_store(f)
                statuses.append(int(rsp.Status) if rsp is not None and "Status" in rsp else -1)
            echo = assoc.send_c_echo()
            statuses.append(int(echo.Status))
        finally:
            assoc.release()
        return statuses
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous
