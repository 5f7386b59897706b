"""The public API of gymfleet.rollouts is declared once, in ``__all__``."""

from __future__ import annotations

import gymfleet.rollouts as rollouts


def test_all_matches_the_namespace() -> None:
    public = {name for name in dir(rollouts) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(rollouts, name)).__name__ == "module"}
    assert set(rollouts.__all__) == public - modules - {"annotations"}
    assert sorted(rollouts.__all__, key=str.lower) == sorted(set(rollouts.__all__), key=str.lower)
