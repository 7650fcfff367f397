def test_current_user(api, active):
    user, token = active
    data = api.ok("GET", "users/current", token=token)
    assert data["uuid"] == user.uuid
    assert data["kind"] == "arvados#user"


def test_data_dir_is_isolated(settings):
    assert "crunch-test-" in str(settings.CRUNCH_DATA_DIR)
