import collections

import pytest

from drustage.data.aged_films import (AgedFilm, default_split_file, read_age_sheet, read_split, shared_aged_films,
                                      split_films, write_split)


def test_age_sheets_in_either_spelling_are_read_and_bad_rows_reported(tmp_path):
    (tmp_path / "a.csv").write_text("file,boneage_months,sex\nx.png,120,F\ny.png,abc,M\nz.png,60,male\n,30,F\n")
    films, problems = read_age_sheet(tmp_path / "a.csv")
    assert [(f.key, f.sex, f.age_years) for f in films] == [("x.png", "F", 10.0), ("z.png", "M", 5.0)]
    assert films[0].path == tmp_path / "x.png"
    assert len(problems) == 2 and "line 3" in problems[0] and "line 5: no file named" in problems[1]
    (tmp_path / "b.csv").write_text("filename,age_years,male\nimages/q.png,12.5,True\nimages/r.png,40,False\n")
    films, problems = read_age_sheet(tmp_path / "b.csv", images_root=tmp_path / "root")
    assert films == [AgedFilm("images/q.png", tmp_path / "root/images/q.png", "M", 12.5)]
    assert "not between 0 and 30 years" in problems[0]
    (tmp_path / "c.csv").write_text("file,weight\nx.png,3\n")
    with pytest.raises(ValueError, match="no age column"):
        read_age_sheet(tmp_path / "c.csv")


def _films(n=300):
    return [AgedFilm(f"f{i:03d}.png", None, "FM"[i % 2], (i * 7) % 19 + 0.5) for i in range(n)]


def test_the_split_is_seeded_stratified_and_independent_of_order(tmp_path):
    films = _films()
    split = split_films(films)
    assert split == split_films(list(reversed(films))) and split != split_films(films, seed=1)
    counts = collections.Counter(split.values())
    assert abs(counts["test"] - 75) <= 10 and abs(counts["validation"] - 45) <= 10
    for sex in "FM":  # both sexes in the test part, across the ages
        ages = [f.age_years for f in films if f.sex == sex and split[f.key] == "test"]
        assert min(ages) < 4 and max(ages) > 15
    write_split(tmp_path / "s.csv", split)
    assert read_split(tmp_path / "s.csv") == split
    (tmp_path / "bad.csv").write_text("file,split\nx.png,holdout\n")
    with pytest.raises(ValueError, match="split other than"):
        read_split(tmp_path / "bad.csv")


@pytest.mark.real
def test_the_written_split_of_the_shared_films_is_the_seeded_one(real_data):
    films = shared_aged_films(real_data)
    assert len(films) == 777 and all(f.path.is_file() for f in films)
    written = read_split(default_split_file())
    assert written == split_films(films)
    assert collections.Counter(written.values())["test"] >= 150
