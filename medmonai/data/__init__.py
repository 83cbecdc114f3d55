"""Data layer: datalists, builders, DICOM series handling, phantoms and the dataset fingerprint.

Modules:
    datalist: the one datalist format (decathlon-style JSON), loading, writing and checking.
    builders: datalists from MedMNIST ``.npz``, image folders, CSV tables, DICOM folders and MSD folders.
    dicom: DICOM folder scanning, series validation and the MONAI reader :class:`DicomSeriesReader`.
    phantoms: the deterministic synthetic phantom generator (the embedded default data).
    fingerprint: dataset fingerprint and the preprocessing plan derived from it.
    splits: subject-grouped, stratified hold-out splits.
    samplers: class weights and a class-balanced sampler.
    defaults: which datalist a bundle runs on (a user datalist or the embedded phantoms).
    preflight: the pre-flight check (every entry opened and decoded before training) and split class checks.
    segmentation: mask label names, image/label entries and the subject hold-out of the segmentation bundles.
    synthetic: synthetic (GAN) samples added to a training split only, with the no-leak provenance check.
"""

from __future__ import annotations

from medmonai.data import defaults, preflight, samplers, segmentation, splits, synthetic
from medmonai.data.builders import (
    datalist_from_csv,
    datalist_from_dicom_folder,
    datalist_from_image_folder,
    datalist_from_medmnist,
    datalist_from_msd,
    pseudonym,
    read_pseudonym_key,
)
from medmonai.data.datalist import (
    DatalistError,
    Problem,
    check_entries,
    load_datalist,
    load_datalist_file,
    make_datalist,
    validate_entries,
    write_datalist,
)
from medmonai.data.dicom import DicomError, DicomSeriesReader, SeriesInfo, scan_dicom_folder
from medmonai.data.fingerprint import compute_fingerprint, fingerprint_datalist, plan_from_fingerprint
from medmonai.data.phantoms import PhantomCase, PhantomConfig, generate_cases, generate_phantom_dataset

__all__ = [
    "DatalistError",
    "DicomError",
    "DicomSeriesReader",
    "PhantomCase",
    "PhantomConfig",
    "Problem",
    "SeriesInfo",
    "check_entries",
    "compute_fingerprint",
    "datalist_from_csv",
    "defaults",
    "preflight",
    "samplers",
    "segmentation",
    "splits",
    "synthetic",
    "datalist_from_dicom_folder",
    "datalist_from_image_folder",
    "datalist_from_medmnist",
    "datalist_from_msd",
    "fingerprint_datalist",
    "generate_cases",
    "generate_phantom_dataset",
    "load_datalist",
    "load_datalist_file",
    "make_datalist",
    "plan_from_fingerprint",
    "pseudonym",
    "read_pseudonym_key",
    "scan_dicom_folder",
    "validate_entries",
    "write_datalist",
]
