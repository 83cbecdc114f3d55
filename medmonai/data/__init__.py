"""Data layer: datalists, builders, DICOM series handling, phantoms and the dataset fingerprint."""
