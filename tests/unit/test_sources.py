"""Each source layout of the seeds, built from real photographs, including the rows that are wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.data.collect import collect
from pipelines.data.sources import Item, Reject, SpecError, parse_spec, read_file
from pipelines.data.sources.demo import DemoSource
from pipelines.data.sources.grubhub import GrubhubSource
from pipelines.features.social import social_features, social_inputs
from pipelines.models.classical import RECIPES
from pipelines.settings import Settings, TrainSettings
from tests.helpers import photo, posts_manifest


def _reasons(snapshot) -> dict[str, int]:
    return snapshot.rejects["reason"].value_counts().to_dict()


def test_folders_gives_the_binary_label_and_rejects_what_is_not_an_image(tmp_path, settings):
    root = tmp_path / "training images"
    for label, ks in (("popular", range(6)), ("unpopular", range(6, 12))):
        (root / label).mkdir(parents=True)
        for k in ks:
            (root / label / f"{k}.jpg").write_bytes(photo(k))
    (root / "popular" / "notes.jpg").write_text("not an image")
    (root / "popular" / ".DS_Store").write_bytes(b"\0\1")
    (root / "unpopular" / "same.jpg").write_bytes(photo(0))  # under both labels: dropped from both (seed 000)
    (root / "popular" / "png.png").write_bytes(photo(20, fmt="PNG"))

    snap = collect(parse_spec(f"folders:{root}", settings), settings, progress=False)
    labels = snap.manifest.set_index("source_ref")["label"]
    assert labels[str(root / "popular" / "1.jpg")] == 1 and labels[str(root / "unpopular" / "7.jpg")] == 0
    assert snap.meta["label"] == "given" and len(snap.manifest) == 12  # 14 files: 1 text, 2 conflicting
    assert _reasons(snap) == {"not_an_image": 1, "conflicting_duplicate": 2}
    assert set(snap.manifest["format"]) == {"JPEG", "PNG"}
    assert all(snap.image_path(p).exists() for p in snap.manifest["image_path"])


def test_folders_without_both_subfolders_is_a_spec_error(tmp_path):
    (tmp_path / "popular").mkdir()
    with pytest.raises(SpecError, match="unpopular"):
        parse_spec(f"folders:{tmp_path}", Settings())


def _likes_layout(root, lines: list[str], n_images: int = 8):
    images = root / "Data" / "Images (jpg)"
    images.mkdir(parents=True)
    for n in range(1, n_images + 1):
        (images / f"{n}.jpg").write_bytes(photo(n))
    (root / "Data" / "y_likes_data.txt").write_text("\n".join(lines) + "\n")
    (root / "Data" / "README.txt").write_text("images and their likes\n")
    return images


def test_likes_file_reads_seed_004s_layout_and_rejects_bad_lines(tmp_path, settings):
    lines = ["# n: likes", "1: 27", "2: 18", "3.0: 16.0", "4:40  # a comment", "", "5: many", "6: -3",
             "2: 99", "7 27", "9: 12", "8: 31"]
    images = _likes_layout(tmp_path, lines, n_images=8)
    (images / "10.jpg").write_bytes(photo(10))  # an image without a likes line

    source = parse_spec(f"likes-file:{tmp_path}", Settings())
    assert source.images_dir == images and source.likes_file.name == "y_likes_data.txt"
    snap = collect(source, settings, progress=False)
    likes = snap.manifest.set_index("post_number")["likes"].to_dict()
    assert likes == {1: 27, 2: 18, 3: 16, 4: 40, 8: 31}
    assert snap.meta["label"] == "likes" and "score" in snap.manifest
    assert _reasons(snap) == {"malformed_line": 2, "negative_count": 1, "duplicate_id": 1, "missing_file": 1,
                              "unlabelled": 4}


def test_likes_file_needs_both_images_and_likes(tmp_path):
    (tmp_path / "1.jpg").write_bytes(photo(1))
    with pytest.raises(SpecError, match="likes file"):
        parse_spec(f"likes-file:{tmp_path}", Settings())


def _menu_item(name, url_id, popular, base="http://x/"):
    return {"name": name, "popular": popular, "media_image": {"base_url": base, "public_id": url_id, "format": "jpg"}}


def _grubhub_export(base: str) -> dict:
    return {"items": [
        {"object": {"restaurant": {"id": "r1", "name": "Noodle Bar", "menu_category_list": [
            {"name": "Soups", "menu_item_list": [
                _menu_item("ramen", "1", True, base), _menu_item("pho", "2", False, base),
                _menu_item("udon", "3", False, base), {"name": "no photo", "popular": True},
                {"name": "broken", "popular": True, "media_image": {"base_url": base, "format": "jpg"}},
                _menu_item("shared", "4", True, base),
            ]},
            {"name": "Drinks", "menu_item_list": [_menu_item("tea", "5", True, base),
                                                  _menu_item("soda", "6", True, base)]},
        ]}}},
        {"object": {"restaurant": {"id": "r2", "name": "Cafe", "menu_category_list": [
            {"name": "Cakes", "menu_item_list": [
                _menu_item("torte", "7", True, base), _menu_item("shared again", "4", False, base),
                _menu_item("pie", "8", "yes", base), _menu_item("tart", "9", False, base),
            ]},
        ]}}},
        {"object": {}},
    ]}


def test_grubhub_keeps_two_sided_categories_and_drops_urls_listed_both_ways(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_grubhub_export("https://images.example/")))
    entries = list(parse_spec(f"grubhub:{path}", Settings()).items())
    items = {e.ref.rsplit("/", 1)[1]: e for e in entries if isinstance(e, Item)}
    rejects = pd.Series([e.reason for e in entries if isinstance(e, Reject)]).value_counts().to_dict()
    labels = {k: v.fields["label"] for k, v in items.items()}
    assert labels == {"1.jpg": 1, "2.jpg": 0, "3.jpg": 0, "7.jpg": 1, "9.jpg": 0}
    assert items["1.jpg"].url == "https://images.example/1.jpg" and items["1.jpg"].data is None
    assert items["1.jpg"].fields["group"] == "r1/Soups" and items["7.jpg"].fields["category"] == "Cakes"
    assert rejects == {"malformed_entry": 3, "one_sided_category": 2, "conflicting_duplicate": 2}


def test_grubhub_collection_downloads_the_photos(tmp_path, http_server, fast_settings):
    path = tmp_path / "export.json"
    export = _grubhub_export(http_server.url("/img/"))
    export["items"][0]["object"]["restaurant"]["menu_category_list"][0]["menu_item_list"].append(
        _menu_item("gone", "missing", False, http_server.url("/")))
    path.write_text(json.dumps(export))
    snap = collect(parse_spec(f"grubhub:{path}", fast_settings), fast_settings, progress=False)
    assert sorted(snap.manifest["label"]) == [0, 0, 0, 1, 1]
    assert set(snap.manifest["group"]) == {"r1/Soups", "r2/Cakes"}
    assert _reasons(snap)["http_404"] == 1
    assert snap.manifest.groupby("group")["split"].nunique().max() == 1


def test_grubhub_malformed_json_is_a_spec_error(tmp_path):
    path = tmp_path / "export.json"
    path.write_text('{"items": [')
    with pytest.raises(SpecError, match="not valid JSON"):
        GrubhubSource.from_location(str(path), Settings())


def test_csv_manifest_with_paths_urls_and_bad_rows(tmp_path, http_server, fast_settings):
    (tmp_path / "img").mkdir()
    for k in range(6):
        (tmp_path / "img" / f"{k}.jpg").write_bytes(photo(k))
    (tmp_path / "img" / "text.jpg").write_text("hello")
    rows = [
        "id,image,likes,followers,user_id,posted_at",
        "a,img/0.jpg,10,100,u1,2024-01-01",
        "b,img/1.jpg,20,150,u1,2024-01-02",
        "c,img/2.jpg,5,80,u2,2024-01-03",
        f"d,{http_server.url('/img/30.jpg')},7,90,u3,2024-01-04",
        f"e,{http_server.url('/missing')},7,90,u3,2024-01-04",
        "f,img/3.jpg,-4,100,u2,2024-01-05",
        "g,img/4.jpg,lots,100,u2,2024-01-05",
        "a,img/5.jpg,3,100,u4,2024-01-05",
        "h,img/nope.jpg,3,100,u4,2024-01-05",
        "i,img/text.jpg,3,100,u4,2024-01-05",
        "j,img/5.jpg,3,100,u4,2024-01-05,extra",
        "k,,3,100,u4,2024-01-05",
        "l,img/5.jpg,8,120,u4,not a date",
        "m,img/5.jpg,9,110,u4,2024-02-01",
    ]
    path = tmp_path / "photos.csv"
    path.write_text("\n".join(rows) + "\n")
    source = parse_spec(f"manifest:{path}", Settings())
    assert source.default_label == "median-split"
    snap = collect(source, fast_settings, progress=False)
    assert sorted(snap.manifest["id"]) == ["a", "b", "c", "d", "m"]
    assert _reasons(snap) == {"negative_count": 1, "bad_value": 2, "duplicate_id": 1, "missing_file": 1,
                              "not_an_image": 1, "malformed_line": 1, "missing_image": 1, "http_404": 1}
    assert snap.manifest.groupby("group")["split"].nunique().max() == 1
    assert str(snap.manifest["posted_at"].dtype).startswith("datetime64")


def test_jsonl_and_parquet_manifests(tmp_path, settings):
    for k in range(4):
        (tmp_path / f"{k}.png").write_bytes(photo(k, fmt="PNG"))
    lines = [json.dumps({"image": f"{k}.png", "views": 100 * (k + 1), "favorites": k % 2, "user_id": f"u{k}"})
             for k in range(4)]
    (tmp_path / "rows.jsonl").write_text("\n".join([lines[0], "{broken", "[1, 2]", *lines[1:]]) + "\n")
    snap = collect(parse_spec(f"manifest:{tmp_path / 'rows.jsonl'}", settings), settings, progress=False)
    assert snap.meta["label"] == "favorited" and sorted(snap.manifest["views"]) == [100, 200, 300, 400]
    assert _reasons(snap) == {"malformed_line": 2}

    frame = pd.DataFrame({"path": [f"{k}.png" for k in range(4)], "likes": [1, 2, 3, 4], "label": [1, 0, 1, 0]})
    frame.to_parquet(tmp_path / "rows.parquet")
    snap = collect(parse_spec(f"manifest:{tmp_path / 'rows.parquet'}", settings), settings, name="pq", progress=False)
    assert snap.meta["label"] == "given" and sorted(snap.manifest["label"]) == [0, 0, 1, 1]


def _seed_002_manifest(root: Path, n: int = 12) -> Path:
    """Seed 002's layout: a 30-day cumulative views sequence, user features, no views total and no likes.
    Row k's sequence grows linearly to 10 × (k·7 mod n + 1) × 30; the last row's sequence is missing."""
    days = [f"views_d{d}" for d in range(1, 31)]
    lines = [",".join(["photo_id", "image", "user_id", "posted_at", "user_contacts", "user_groups",
                       "user_mean_views", "photo_count", *days])]
    for k in range(n):
        (root / f"{k}.jpg").write_bytes(photo(k))
        base = 10 * ((k * 7) % n + 1)
        sequence = [""] * 30 if k == n - 1 else [str(base * d) for d in range(1, 31)]
        lines.append(",".join([f"p{k}", f"{k}.jpg", f"u{k % 4}", f"2024-03-{k + 1:02d}T{k:02d}:00:00Z",
                               str(10 * k + 1), str(k), str(50.5 + k), str(100 + k), *sequence]))
    path = root / "flickr.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_seed_002_manifest_takes_its_views_from_the_sequence_and_the_score_label_by_default(tmp_path, settings):
    source = parse_spec(f"manifest:{_seed_002_manifest(tmp_path)}", settings)
    assert source.default_label == "score"
    snap = collect(source, settings, progress=False)
    rows = snap.manifest.set_index("photo_id").sort_index(key=lambda ids: ids.str[1:].astype(int))
    assert snap.meta["label"] == "score" and list(rows.index) == [f"p{k}" for k in range(11)]
    assert rows["views"].tolist() == [300.0 * ((k * 7) % 12 + 1) for k in range(11)]
    assert (rows["views"] == rows["views_d30"]).all() and (rows["seq_scale"] == rows["views"]).all()
    # every post's views were counted over the same 30 days: views per day of those, not since posting
    assert (rows["views_days"] == 30).all()
    np.testing.assert_allclose(rows["score"], np.log(rows["views"] / 30 + 1))
    assert rows["label"].sum() == 5  # above the median of 11 scores
    rejects = snap.rejects.set_index("reason")
    assert _reasons(snap) == {"missing_sequence": 1}
    assert rejects.loc["missing_sequence", "source_ref"] == "11.jpg"
    assert "views_d30 is empty" in rejects.loc["missing_sequence", "message"]

    social = social_inputs(rows)
    assert social["user_contacts"].tolist() == [10.0 * k + 1 for k in range(11)]
    assert social["user_groups"].tolist() == [float(k) for k in range(11)]
    assert social["photo_count"].tolist() == [100.0 + k for k in range(11)]
    assert social["posted_hour"].tolist() == [float(k) for k in range(11)]
    features = social_features(social).drop(columns="text")  # no words in this manifest
    np.testing.assert_allclose(features["log_user_mean_views"], np.log1p([50.5 + k for k in range(11)]))
    assert features["log_followers"].isna().all()  # seed 002 has contacts, not followers
    boosting = RECIPES["social-gb"].build("binary", {"max_iter": 5, "learning_rate": 0.1, "max_leaf_nodes": 4},
                                          TrainSettings()).fit(features, rows["label"])
    kept = set(features.columns[boosting[0].get_support()])  # the columns without a value are left out
    assert {"log_user_contacts", "log_user_groups", "log_user_mean_views", "log_photo_count"} <= kept
    assert "log_followers" not in kept


def test_seed_002_manifest_with_deciles_and_with_the_challenges_own_names(tmp_path, settings):
    snap = collect(parse_spec(f"manifest:{_seed_002_manifest(tmp_path)}", settings), settings, label="deciles",
                   progress=False)
    rows = snap.manifest.sort_values("views")
    assert snap.meta["label"] == "deciles" and len(rows) == 11 and _reasons(snap) == {"missing_sequence": 1}
    assert rows["score"].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # ten bins of 11 ranks: the first holds two
    assert (rows["label"] == (rows["score"] >= 5)).all()

    # the ICIP 2020 challenge's headers, a sequence cut at day 3 and no posting date: deciles of day-3 views
    frame = pd.DataFrame({"FlickrId": ["a", "b"], "url": ["http://x/a.jpg", "http://x/b.jpg"], "Contacts": [3, 4],
                          "GroupsCount": [1, 2], "MeanViews": [9.5, 7.0], "PhotoCount": [40, 50],
                          "views_d1": [1, 2], "views_d2": [2, 4], "views_d3": [5, None]})
    frame.to_parquet(tmp_path / "icip.parquet")
    source = parse_spec(f"manifest:{tmp_path / 'icip.parquet'}", settings)
    item, reject = source.entries
    assert source.default_label == "deciles"
    assert item.fields["views"] == 5.0 and item.fields["user_contacts"] == 3.0 and item.fields["user_groups"] == 1
    assert item.fields["user_mean_views"] == 9.5 and item.fields["photo_count"] == 40.0
    assert isinstance(reject, Reject) and reject.reason == "missing_sequence" and "views_d3" in reject.message


@pytest.mark.parametrize("spec, match", [
    ("nope:x", "unknown source kind"),
    ("", "unknown source kind"),
    ("folders:", "needs a location"),
    ("folders:/does/not/exist", "not a folder"),
    ("manifest:/does/not/exist.csv", "not a file"),
    ("demo:abc", "count"),
    ("demo:3", "count"),
])
def test_malformed_specs_are_spec_errors(spec, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(spec, Settings())


def test_manifest_without_an_image_column_or_usable_row(tmp_path):
    (tmp_path / "a.csv").write_text("likes,views\n1,2\n")
    with pytest.raises(SpecError, match="no image column"):
        parse_spec(f"manifest:{tmp_path / 'a.csv'}", Settings())
    (tmp_path / "b.csv").write_text("image,likes\n,1\nx.jpg,-1\n")
    with pytest.raises(SpecError, match="no usable row"):
        parse_spec(f"manifest:{tmp_path / 'b.csv'}", Settings())
    (tmp_path / "c.txt").write_text("image\nx.jpg\n")
    with pytest.raises(SpecError, match="csv"):
        parse_spec(f"manifest:{tmp_path / 'c.txt'}", Settings())


def test_manifest_paths_outside_its_folder_are_rejected_without_saying_what_is_there(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "0.jpg").write_bytes(photo(0))
    (tmp_path / "secret.jpg").write_bytes(photo(1))
    (folder / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (folder / "inner.jpg").symlink_to(folder / "0.jpg")  # a symlink that stays inside is fine
    rows = ["image,likes", "0.jpg,1", "inner.jpg,2", "../secret.jpg,3", "../absent.jpg,4",
            f"{tmp_path / 'secret.jpg'},5", "link.jpg,6"]
    (folder / "m.csv").write_text("\n".join(rows) + "\n")

    source = parse_spec(f"manifest:{folder / 'm.csv'}", Settings())
    outside = [r for r in source.items() if isinstance(r, Reject)]
    assert [r.reason for r in outside] == ["outside_manifest_folder"] * 4
    existing, absent = (r.message.replace(Path(r.ref).name, "NAME") for r in outside[:2])
    assert existing == absent  # an existing outside file reads just like a missing one
    assert sum(isinstance(i, Item) for i in source.items()) == 2

    allowed = parse_spec(f"manifest:{folder / 'm.csv'}", Settings().for_collection(allow_outside_paths=True))
    reasons = [r.reason for r in allowed.items() if isinstance(r, Reject)]
    assert reasons == ["missing_file"]
    assert sum(isinstance(i, Item) and i.data == photo(1) for i in allowed.items()) == 3


def test_only_regular_files_are_read_and_a_fifo_never_blocks(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")  # no writer: a blocking open would hang here
    (tmp_path / "0.jpg").write_bytes(photo(0))
    (tmp_path / "m.csv").write_text("image,likes\n0.jpg,1\npipe.jpg,2\n/dev/zero,3\n")
    settings = Settings().for_collection(allow_outside_paths=True)
    entries = list(parse_spec(f"manifest:{tmp_path / 'm.csv'}", settings).items())
    assert [e.reason for e in entries if isinstance(e, Reject)] == ["not_a_regular_file"] * 2
    assert read_file(tmp_path, {}, 10).reason == "not_a_regular_file"


def test_collection_flags_widen_the_settings_and_never_narrow_them():
    configured = Settings(download={"allow_private": True}, sources={"allow_outside_paths": True})
    assert configured.for_collection().download.allow_private is True
    assert configured.for_collection().sources.allow_outside_paths is True
    flagged = Settings().for_collection(allow_private=True, allow_outside_paths=True)
    assert flagged.download.allow_private and flagged.sources.allow_outside_paths
    assert not Settings().for_collection().download.allow_private


def test_the_demo_city_variant_is_a_new_category_and_nothing_else_is_accepted():
    default, city = (list(DemoSource(n=5, seed=3, size=64, users=10, variant=v).items()) for v in (None, "city"))
    assert {i.fields["category"] for i in city} == {"city"} and "city" not in {i.fields["category"] for i in default}
    assert not {i.ref for i in city} & {i.ref for i in default}
    assert city[0].data != default[0].data
    with pytest.raises(SpecError, match="variant"):
        DemoSource(n=5, seed=3, size=64, users=10, variant="moon")


def test_the_shifted_demo_rule_keeps_every_image_and_user_and_changes_what_is_popular(settings):
    default = list(parse_spec("demo:300?seed=5", settings).items())
    shifted = list(parse_spec("demo:300?seed=5&rule=shifted", settings).items())
    assert [i.data for i in default] == [i.data for i in shifted]
    assert [i.fields["post_id"] for i in default] == [i.fields["post_id"] for i in shifted] == \
        [f"demo-5-{k}" for k in range(300)]
    assert [i.fields["followers"] for i in default] == [i.fields["followers"] for i in shifted]
    before, after = (np.array([i.oracle["appeal"] for i in items]) for items in (default, shifted))
    assert np.corrcoef(before, after)[0, 1] < -0.3  # what was liked is now disliked
    assert abs(after.mean()) < 0.3 and 0.7 < after.std() < 1.3  # on the default rule's scale
    for spec in ("demo:300?rule=moon", "demo:300?seed=x", "demo:300?colour=red"):
        with pytest.raises(SpecError, match="demo"):
            parse_spec(spec, settings)


def test_text_columns_and_missing_social_values_keep_their_rows(tmp_path, settings):
    snap = collect(parse_spec(f"manifest:{posts_manifest(tmp_path, 16, bad=1)}", settings), settings,
                   progress=False)
    # only the row with a non-number in a count column is rejected, with its reason
    assert _reasons(snap) == {"bad_value": 1} and len(snap.manifest) == 15
    assert "user_contacts='many' is not a number" in snap.rejects["message"].iloc[0]
    rows = snap.manifest.set_index("post_id")
    assert rows.loc["p1", "tags"] == "me|city|art" and rows.loc["p1", "title"] == "Day 1, out"
    assert pd.isna(rows.loc["p3", "user_mean_views"]) and pd.isna(rows.loc["p2", "tags"])
    features = social_features(social_inputs(rows.loc[["p1", "p2"]].reset_index()))
    assert features["text"].iloc[0] == "me city art day 1 out"
    assert features["tag_count"].iloc[0] == 3 and np.isnan(features["tag_count"].iloc[1])


def test_tags_as_a_list_in_json_lines_are_text(tmp_path, settings):
    (tmp_path / "a.jpg").write_bytes(photo(1))
    (tmp_path / "b.jpg").write_bytes(photo(2))
    rows = [{"image": "a.jpg", "likes": 3, "tags": ["beach", "sun"], "description": "a walk"},
            {"image": "b.jpg", "likes": 5, "tags": 2019}]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    snap = collect(parse_spec(f"manifest:{tmp_path / 'rows.jsonl'}", settings), settings, progress=False)
    by_likes = snap.manifest.set_index("likes")
    assert by_likes.loc[3, "tags"] == "beach|sun" and by_likes.loc[3, "description"] == "a walk"
    assert by_likes.loc[5, "tags"] == "2019"  # a column with words in it is text: 2019 is a tag
    (tmp_path / "counts.csv").write_text("image,likes,tags\na.jpg,3,4\nb.jpg,5,0\n")
    counted = collect(parse_spec(f"manifest:{tmp_path / 'counts.csv'}", settings), settings, name="counts",
                      progress=False).manifest.set_index("likes")
    assert counted["tag_count"].to_dict() == {3: 4.0, 5: 0.0} and "tags" not in counted  # numbers: a count


def test_a_fresh_demo_draw_is_new_data_that_the_manifest_source_collects_whole(tmp_path, settings):
    """`popularity demo-data`: each draw is new photos and users; the manifest replaced whole is what a
    `manifest:` retrain source collects, with the demo's label scheme, and a dark draw is darker."""
    from PIL import Image, ImageStat

    from pipelines.data.sources.demo import write_draw

    incoming = tmp_path / "incoming"
    first = write_draw(incoming, settings, n=30)
    snap1 = collect(parse_spec(f"manifest:{incoming / 'manifest.csv'}", settings), settings, progress=False)
    second = write_draw(incoming, settings, n=30, shift="dark")
    assert (first["draw"], second["draw"]) == (1, 2)  # the folder's next draw by default
    assert sorted(p.name for p in incoming.iterdir()) == ["draw-0001", "draw-0002", "draw.json", "manifest.csv"]
    snap2 = collect(parse_spec(f"manifest:{incoming / 'manifest.csv'}", settings), settings, progress=False)
    for snap in (snap1, snap2):  # every row arrives: kept, or filtered by seed 003's MAD rule on followers
        assert len(snap.manifest) + len(snap.rejects) == 30 and snap.rejects["message"].str.contains("followers are outside").all()
    assert snap1.meta["label"] == snap2.meta["label"] == DemoSource.default_label
    assert not set(snap1.manifest["image_id"]) & set(snap2.manifest["image_id"])  # nothing of draw 1 is in draw 2
    assert snap1.id != snap2.id and {"followers", "views_d30", "likes"} <= set(snap2.manifest)

    def brightness(snapshot) -> float:
        return float(np.mean([ImageStat.Stat(Image.open(snapshot.path / p).convert("L")).mean[0]
                              for p in snapshot.manifest["image_path"]]))

    assert brightness(snap2) < 0.6 * brightness(snap1)
    # the same draw again is the same data (a retrain on it would be refused: nothing new to learn)
    write_draw(tmp_path / "again", settings, draw=1, n=30)
    again = collect(parse_spec(f"manifest:{tmp_path / 'again' / 'manifest.csv'}", settings), settings, progress=False)
    assert set(again.manifest["image_id"]) == set(snap1.manifest["image_id"])
    with pytest.raises(SpecError, match="--shift"):
        write_draw(incoming, settings, shift="purple")
    with pytest.raises(SpecError, match="draw 0"):
        write_draw(incoming, settings, draw=0)
