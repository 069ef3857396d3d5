"""The dataset catalog: fields, the published lists each entry belongs to (OpenUS's 42-row table, USF-MAE's
OpenUS-46, the shared data) and the printed table."""

from __future__ import annotations

from openus_monai.data.catalog import catalog_lists, catalog_table, find_dataset, list_counts, load_catalog

#: published totals: OpenUS (arXiv 2511.11510) "over 308K images from 42 publicly available datasets";
#: USF-MAE (arXiv 2510.22990) "46 open-source datasets"
OPENUS_DATASETS, OPENUS_MIN_IMAGES, USF_MAE_DATASETS = 42, 308_000, 46


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def test_catalog_has_shared_and_named_sets():
    names = {e["name"] for e in load_catalog()}
    assert {"BUSI", "HC18", "STU-Hospital", "USAnotAI", "DDTI", "COVID-BLUES"} <= names and len(names) >= 42
    for e in load_catalog():
        assert {"organ", "images", "task", "labels", "source", "licence", "layout"} <= set(e)
        assert isinstance(e["images"], int) or e["images"] == "unknown"
    assert find_dataset("/data/raw/hip-dicom")["name"] == "Radiopaedia-hip-cine" and find_dataset("nothing") is None
    assert "BUSI" in catalog_table()


def test_openus_and_usf_mae_lists_match_their_published_totals():
    entries = load_catalog()
    openus = [e for e in entries if "openus" in e["listed_in"]]
    assert len(openus) == OPENUS_DATASETS
    sizes = [e["listings"]["openus"]["size"] for e in openus]
    assert all(isinstance(s, int) and s > 0 for s in sizes) and sum(sizes) >= OPENUS_MIN_IMAGES
    assert sum("usf-mae" in e["listed_in"] for e in entries) == USF_MAE_DATASETS
    # each published row is named once: no two entries claim the same row of a list
    for tag in ("openus", "usf-mae"):
        rows = [_norm(e["listings"][tag]["as"]) for e in entries if tag in e["listings"]]
        assert len(rows) == len(set(rows)), tag


def test_listed_in_agrees_with_listings_and_sources():
    lists = catalog_lists()
    assert all(lists[t]["title"] for t in lists) and lists["openus"]["url"].startswith("https://github.com/")
    for e in load_catalog():
        tags = e["listed_in"]
        assert tags and set(tags) <= set(lists), e["name"]  # no "unverified" left, no unknown tag
        assert ("not-listed" in tags) == (tags == ["not-listed"]), e["name"]
        assert set(e["listings"]) == set(tags) & {"openus", "openus-downstream", "usf-mae"}, e["name"]
        for row in e["listings"].values():  # the name a list uses finds the entry (prepare matches folders by it)
            assert "as" not in row or find_dataset(row["as"])["name"] == e["name"]


def test_names_and_aliases_are_unambiguous():
    keys = [k for e in load_catalog() for k in {_norm(n) for n in (e["name"], *e["aliases"])}]
    assert len(keys) == len(set(keys))
    assert find_dataset("CardiacUDA")["name"] == "CardiacUDC" and find_dataset("Breast-Lesions-USG")["name"] == "BrEaST"


def test_table_ends_with_counts_per_list():
    counts = list_counts()
    assert counts["openus"] == OPENUS_DATASETS and counts["usf-mae"] == USF_MAE_DATASETS and "unverified" not in counts
    tail = catalog_table().splitlines()[-len(counts) - 1 :]
    assert tail[0].startswith(f"{len(load_catalog())} datasets")
    openus_line = next(line for line in tail if line.split()[0] == "openus")
    assert f" {OPENUS_DATASETS}," in openus_line and "XZheng0427/OpenUS" in openus_line
