"""The shared store keys: every personal key lies under the user's prefix."""

import pytest

from sleeve import keys


def test_personal_keys_lie_under_the_user_prefix():
    prefix = keys.user_prefix("user-1")
    assert prefix == "users/user-1/"
    for key in (keys.uploads_prefix("user-1"), keys.adapter_prefix("user-1", "r1"),
                keys.personalize_prefix("user-1", "r1")):
        assert key.startswith(prefix)
    assert keys.image_record_key("abc") == "images/by-id/abc.json"
    for bad in ("alice@example.com", "../etc", "", "a/b"):
        with pytest.raises(ValueError, match="opaque id"):
            keys.user_prefix(bad)
