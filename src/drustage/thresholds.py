"""The scores at which a box is kept and a reading is flagged for review, stated once for every
layer (and importable without torch, so the command line shows them)."""

from __future__ import annotations

__all__ = ["DETECTION_THRESHOLD", "MIN_CONFIDENCE", "PARTNER_THRESHOLD", "REVIEW_DETECTION_SCORE"]

# A bone whose best box scores below this is "not found" (flagged, never guessed).
DETECTION_THRESHOLD = 0.5
# Beside a bone found above the detection threshold, its partner is kept from this score up when
# the two fit together: on the demo detector's 65 held-out real films the ulna went from 87.7%
# to 90.8% centred on the right bone, the radius unchanged (runs of recipes/propose_boxes.py).
PARTNER_THRESHOLD = 0.01
# Found boxes scoring below this are flagged: on detector7's real films the boxes on the wrong
# structure scored 0.51-0.80 while right ones scored 0.97-1.0 (median 0.997); 0.8 flagged none
# of 60 right held-out real films and 1 of 400 fresh phantoms (see issue 4's closing note).
REVIEW_DETECTION_SCORE = 0.8
# A phase read with less confidence than this is flagged for review.
MIN_CONFIDENCE = 0.6
