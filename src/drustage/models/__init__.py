"""Models: spec-string classifier CNNs and the Faster R-CNN detector."""
