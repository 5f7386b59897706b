"""The public API is declared once (gymfleet.__all__) and every name in it resolves."""

import gymfleet


def test_all_names_resolve_and_are_sorted():
    assert gymfleet.__all__ == sorted(gymfleet.__all__, key=str)
    for name in gymfleet.__all__:
        assert getattr(gymfleet, name) is not None, name


def test_no_undeclared_public_names():
    public = {name for name in dir(gymfleet) if not name.startswith("_")}
    assert public <= set(gymfleet.__all__)
