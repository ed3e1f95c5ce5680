"""What a reading becomes for other systems: DICOM SR and Secondary Capture in the source study, FHIR
Observations. Builds on the pipeline's reports; nothing upstream imports it."""
