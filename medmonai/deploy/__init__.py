"""Hospital-side deployment: trained models in, DICOM results out.

* :mod:`medmonai.deploy.models`: a trained bundle run loaded for inference (:func:`load_clinical_model`);
* :mod:`medmonai.deploy.pipeline`: ``medmonai infer`` on DICOM studies and the ``watch`` loops (folder, DIMSE,
  DICOMweb); the SR/SEG/NIfTI writers are in :mod:`medmonai.data.dicom_output`, next to the DICOM reading code;
* :mod:`medmonai.deploy.pacs`: DIMSE client (``pynetdicom``) and the Orthanc helpers;
* :mod:`medmonai.deploy.dicomweb`: DICOMweb client (QIDO-RS / WADO-RS / STOW-RS; optional ``dicomweb-client``);
* :mod:`medmonai.deploy.onnx`: ONNX export checked against the checkpoint, ONNX Runtime inference (optional).
"""
