"""Hidden tastes: components score what they say, the files are validated, users are stable."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image, ImageDraw

from simulation.palette import COLOURS, MOODS, prompt_colours
from simulation.taste import DEFAULT_TASTE, TASTES_DIR, Features, Taste, TasteError, UserTaste
from simulation.users import Population, heldout_set

PROMPT = ("album cover art, square composition, a single scene of sun, joyful mood, crimson and sunny yellow "
          "colour palette, bright minimalist digital illustration, pop music, centered subject, no text or lettering")


def _cover(background, subject, centre=(32, 32), radius=14) -> Image.Image:
    image = Image.new("RGB", (64, 64), background)
    x, y = centre
    ImageDraw.Draw(image).ellipse([x - radius, y - radius, x + radius, y + radius], fill=subject)
    return image


def test_every_labeller_colour_and_mood_has_pixels():
    from inference import lexicon

    colours = {*lexicon.COLOURS.values(), *lexicon.PALETTE_HINTS.values(), *lexicon.DEFAULT_PALETTE,
               *(c for d in lexicon.GENRE_DEFAULTS.values() for c in d[2])}
    moods = {*lexicon.MOODS.values(), *(d[0] for d in lexicon.GENRE_DEFAULTS.values()), lexicon.DEFAULT_MOOD}
    assert sorted(colours - set(COLOURS)) == []
    assert sorted(moods - set(MOODS)) == []


def test_prompt_colours_reads_the_palette_phrase_longest_name_first():
    assert prompt_colours(PROMPT) == [COLOURS["crimson"], COLOURS["sunny yellow"]]
    deep = "a single scene of sea, calm mood, deep blue, silver and blue colour palette, blue ballad"
    assert prompt_colours(deep) == [COLOURS["deep blue"], COLOURS["silver"], COLOURS["blue"]]
    assert prompt_colours("album cover, night, dark") == []


def test_features_measure_brightness_saturation_and_centring():
    dark = Features.of(_cover((10, 10, 20), (40, 40, 60)))
    bright = Features.of(_cover((250, 240, 200), (255, 200, 0)))
    assert dark.brightness < 0.1 < 0.8 < bright.brightness
    grey = Features.of(_cover((128, 128, 128), (200, 200, 200)))
    vivid = Features.of(_cover(COLOURS["crimson"], COLOURS["sunny yellow"]))
    assert grey.saturation < 0.05 < 0.5 < vivid.saturation and grey.hue is None
    corner = Features.of(_cover(COLOURS["crimson"], COLOURS["sunny yellow"], centre=(12, 12), radius=10))
    blank = Features.of(Image.new("RGB", (64, 64), COLOURS["crimson"]))
    assert vivid.subject_offset < 0.05 < 0.5 < corner.subject_offset and blank.subject_offset == 1.0


def _user(path, name="u") -> UserTaste:
    return UserTaste.draw(Taste.load(path), name)


def test_default_taste_prefers_the_prompts_colours_and_a_centred_subject():
    user = _user(DEFAULT_TASTE)
    good = Features.of(_cover(COLOURS["crimson"], COLOURS["sunny yellow"]))
    wrong_colours = Features.of(_cover(COLOURS["forest green"], COLOURS["deep blue"]))
    assert user.score(good, PROMPT) > user.score(wrong_colours, PROMPT) + 0.2
    middle = Features.of(_cover(COLOURS["crimson"], COLOURS["sunny yellow"], radius=10))
    off_centre = Features.of(_cover(COLOURS["crimson"], COLOURS["sunny yellow"], centre=(14, 14), radius=10))
    assert user.score(middle, PROMPT) > user.score(off_centre, PROMPT) + 0.1


def test_dark_minimal_taste_is_a_different_taste():
    dark_user, default_user = _user(TASTES_DIR / "dark-minimal.json"), _user(DEFAULT_TASTE)
    bright = Features.of(_cover(COLOURS["crimson"], COLOURS["sunny yellow"]))
    dark = Features.of(_cover((14, 12, 20), (45, 42, 50)))
    assert dark_user.score(dark, PROMPT) > dark_user.score(bright, PROMPT) + 0.3
    assert default_user.score(bright, PROMPT) > default_user.score(dark, PROMPT) + 0.2


def test_ratings_are_whole_stars_stable_per_user_and_image_and_users_differ():
    population = Population.of(Taste.load(DEFAULT_TASTE), 20)
    features = Features.of(_cover(COLOURS["crimson"], COLOURS["sunny yellow"]))
    first = [u.rate(features, PROMPT, "image-1") for u in population.users]
    assert first == [u.rate(features, PROMPT, "image-1") for u in Population.of(Taste.load(DEFAULT_TASTE), 20).users]
    assert set(first) <= {1, 2, 3, 4, 5} and len(set(first)) > 1  # bias and noise: users disagree
    assert len({u.weights for u in population.users}) == 20


def test_a_new_taste_is_a_json_file(tmp_path):
    path = tmp_path / "warm.json"
    path.write_text(json.dumps({"name": "warm", "users": 5,
                                "components": [{"kind": "hue", "target": 0.05, "width": 0.08}]}))
    taste = Taste.load(path)
    assert taste.name == "warm" and taste.users == 5
    user = UserTaste.draw(taste, "x")
    assert user.score(Features.of(_cover((230, 80, 30), (250, 120, 40))), PROMPT) > \
        user.score(Features.of(_cover((30, 80, 230), (40, 120, 250))), PROMPT) + 0.5


@pytest.mark.parametrize("data, message", [
    ({"components": [{"kind": "centred"}]}, "'name'"),
    ({"name": "x", "components": []}, "'components'"),
    ({"name": "x", "components": [{"kind": "beauty"}]}, "kind must be one of"),
    ({"name": "x", "components": [{"kind": "brightness"}]}, "needs a 'target'"),
    ({"name": "x", "components": [{"kind": "centred", "weight": "lots"}]}, "weight must be a number"),
    ({"name": "x", "components": [{"kind": "centred", "weight": 0}]}, "must be > 0"),
    ({"name": "x", "components": [{"kind": "centred", "colour": 1}]}, "unknown field(s) ['colour']"),
    ({"name": "x", "components": [{"kind": "centred"}], "rating": {"mood": 1}}, "rating has unknown field"),
    ({"name": "x", "components": [{"kind": "centred"}], "users": 0}, "users must be a positive"),
    ({"name": "x", "components": [{"kind": "centred"}], "colour": 1}, "unknown field(s) ['colour']"),
])
def test_bad_taste_files_are_rejected_naming_the_field(data, message):
    with pytest.raises(TasteError, match="taste <dict>: .*" + re.escape(message)):
        Taste.from_dict(data)


def test_unreadable_taste_files_say_so(tmp_path):
    with pytest.raises(TasteError, match="does not exist"):
        Taste.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TasteError, match="is not JSON"):
        Taste.load(tmp_path / "bad.json")


def test_the_held_out_set_is_fixed_and_never_a_requested_prompt():
    items = heldout_set(4, 2)
    assert [i.key for i in items] == [f"heldout-{n:02d}-{s}" for n in range(4) for s in range(2)]
    assert items == heldout_set(4, 2)
    excluded = heldout_set(4, 2, exclude={items[0].prompt})
    assert items[0].prompt not in {i.prompt for i in excluded}


def test_requests_are_the_same_for_every_strategy():
    population = Population.of(Taste.load(DEFAULT_TASTE), 30)
    from datetime import UTC, datetime

    songs = [{"song_id": f"s{i}", "prompt_id": f"p{i}", "prompt": "x"} for i in range(5)]
    start = datetime(2027, 1, 4, 3, tzinfo=UTC)
    week = population.requests(1, start, songs, 0.5)
    assert week == population.requests(1, start, list(reversed(songs)), 0.5)
    assert 5 < len(week) < 25 and week != population.requests(2, start, songs, 0.5)
    assert all(start <= at < start.replace(day=9) for _, _, at in week)
