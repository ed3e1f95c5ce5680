"""FHIR R4 Observations of a reading, for an EHR: one per bone found.

Built with ``fhir.resources``' R4B models (Observation and Device are unchanged from R4 to R4B).
The stage is the coded value (system ``CODE_SYSTEM``, the FHIR twin of the DICOM outputs' private
scheme), phase, confidences and the review flag are components, the bundle is a contained Device
(drustage's version, the model fingerprint as its identifier). No patient identifier is written;
for a DICOM input the observation is ``derivedFrom`` its study (by Study Instance UID).
"""

from __future__ import annotations

from drustage.stages import BONES

__all__ = ["CODE_SYSTEM", "observations", "observation_bundle"]

CODE_SYSTEM = "urn:drustage:dru"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
BODY_SITES = {"radius": ("62413002", "Bone structure of radius"), "ulna": ("23416004", "Bone structure of ulna")}


def _concept(code: str, display: str, system: str = CODE_SYSTEM) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _device(report: dict, version: str) -> dict:
    return {"resourceType": "Device", "id": "drustage",
            "identifier": [{"system": f"{CODE_SYSTEM}:model-fingerprint", "value": report["model_fingerprint"]}],
            "deviceName": [{"name": "drustage", "type": "manufacturer-name"}],
            "version": [{"value": version}]}


def _observation(report: dict, bone: str, version: str, study_uid: str | None):
    from fhir.resources.R4B.observation import Observation

    result = report[bone]
    ratio = {"unit": "1", "system": UCUM, "code": "1"}
    components = [
        {"code": _concept("PHASE", "Growth phase"),
         "valueCodeableConcept": _concept(f"PHASE-{result['phase'].upper()}", result["phase"])},
        {"code": _concept("CONFIDENCE", "Confidence of the reading"),
         "valueQuantity": {"value": result["confidence"], **ratio}},
        {"code": _concept("PHASE-CONFIDENCE", "Confidence of the growth phase"),
         "valueQuantity": {"value": result["phase_confidence"], **ratio}},
        {"code": _concept("REVIEW", "Needs human review"), "valueBoolean": report["needs_review"]},
    ]
    if result.get("expected_stage") is not None:
        components.append({"code": _concept("EXPECTED-STAGE", "Probability-weighted stage"),
                           "valueQuantity": {"value": result["expected_stage"], "unit": "stage"}})
    site_code, site_name = BODY_SITES[bone]
    value = (_concept(result["prediction"], f"{bone} stage {result['prediction']}") if result["scheme"] == "stage"
             else _concept(f"PHASE-{result['phase'].upper()}", result["phase"]))
    notes = list(report["review_reasons"])
    guidance = report.get("guidance")
    if guidance:
        notes.insert(0, f"{guidance['rule']}: {guidance['wording']} {guidance['disclaimer']}")
    resource = {
        "resourceType": "Observation", "id": f"dru-{bone}", "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "imaging", "display": "Imaging"}]}],
        "code": _concept("DRU-STAGE" if result["scheme"] == "stage" else "PHASE",
                         "Luk DRU stage" if result["scheme"] == "stage" else "Growth phase"),
        "bodySite": _concept(site_code, site_name, SNOMED),
        "valueCodeableConcept": value, "component": components,
        "contained": [_device(report, version)], "device": {"reference": "#drustage"},
        "note": [{"text": text} for text in notes],
    }
    if study_uid:
        resource["derivedFrom"] = [{"type": "ImagingStudy",
                                    "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}}]
    return Observation.model_validate(resource)


def observations(report: dict, version: str, study_uid: str | None = None) -> list:
    """One validated Observation per bone read (a bone not found has none)."""
    return [_observation(report, bone, version, study_uid) for bone in BONES
            if report[bone]["found"] and report[bone]["phase"]]


def observation_bundle(report: dict, version: str, study_uid: str | None = None) -> dict:
    """A FHIR ``collection`` Bundle of the observations, as JSON-ready data."""
    from fhir.resources.R4B.bundle import Bundle

    bundle = Bundle.model_validate({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:{_uuid(report, o.id)}", "resource": o.model_dump(mode="json")}
        for o in observations(report, version, study_uid)]})
    return bundle.model_dump(mode="json", exclude_none=True)


def _uuid(report: dict, name: str) -> str:
    import uuid

    key = f"{CODE_SYSTEM}:{report['input_sha256']}:{report['model_fingerprint']}:{name}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))
