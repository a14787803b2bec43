"""mixkit.registry: the one rule every by-name family follows."""

import pytest

from mixkit.registry import Registry


def test_register_get_list():
    reg = Registry("widget")
    assert reg.register("b", 2) == 2
    reg.register("a", 1)
    assert reg.get("a") == 1 and reg.list() == ["a", "b"] and "a" in reg and "c" not in reg
    assert list(reg) == ["a", "b"] and len(reg) == 2


def test_duplicate_raises_unless_overwrite():
    reg = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered.*overwrite=True"):
        reg.register("a", 2)
    assert reg.get("a") == 1
    reg.register("a", 2, overwrite=True)
    assert reg.get("a") == 2


@pytest.mark.parametrize("name, error, match", [
    ("nope", ValueError, r"unknown widget 'nope'; available: \['a'\]"),
    (["a"], TypeError, "looked up by its name.*list"),
    (None, TypeError, "NoneType"),
])
def test_get_bad_names(name, error, match):
    reg = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(error, match=match):
        reg.get(name)


@pytest.mark.parametrize("name", ["", 3, None])
def test_register_bad_names(name):
    with pytest.raises(TypeError, match="non-empty string"):
        Registry("widget").register(name, 1)


def test_unregister_removes_and_names_unknown():
    reg = Registry("widget")
    reg.register("a", 1)
    assert reg.unregister("a") == 1 and "a" not in reg and len(reg) == 0
    with pytest.raises(ValueError, match="unknown widget 'a'"):
        reg.unregister("a")
