"""DICOM result objects: SR (TID 1500), and later SEG and key images."""
