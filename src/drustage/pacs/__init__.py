"""The reading room's DICOM node (``drustage listen``) and its job queue. Builds on the pipeline and
the DICOM outputs."""
