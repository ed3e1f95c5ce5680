import numpy as np

from drustage.stages import all_stages, bracing_guidance
from drustage.viz import _font, _wrap, review_lines


def _has_glyph(font, character: str, missing: np.ndarray) -> bool:
    mask = font.getmask(character)
    return mask.size[0] == 0 or not np.array_equal(np.asarray(mask), missing)


def test_guidance_text_is_drawn_with_glyphs_the_font_has():
    font = _font(14)
    missing = np.asarray(font.getmask("\ue000"))  # a private-use character: the font's box glyph
    texts = {text for radius in all_stages("radius") for ulna in all_stages("ulna")
             for text in (bracing_guidance(radius, ulna).wording, bracing_guidance(radius, ulna).disclaimer)}
    assert any("\u2013" in text for text in texts)  # the pre-peak wording's "R1–R6"
    drawn = "".join(line for text in texts for line in _wrap(text, 44))
    assert [c for c in set(drawn) if not _has_glyph(font, c, missing)] == []


def test_review_reasons_that_do_not_fit_are_counted_not_cut():
    reasons = [f"reason {i}: " + "word " * 15 for i in range(5)]  # two lines each at 50 characters
    assert review_lines(reasons, room=20) == [line for r in reasons for line in _wrap(r, 50)]
    lines = review_lines(reasons, room=6)
    assert len(lines) <= 6
    assert lines[-1] == "+ 3 more reasons: see the JSON"
    assert lines[:-1] == [line for r in reasons[:2] for line in _wrap(r, 50)]  # whole reasons only
    assert review_lines(reasons[:1], room=1) == ["+ 1 more reason: see the JSON"]
