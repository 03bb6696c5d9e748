from module import validate


def test_all_good():
    assert validate(["a", "b"]) == []


def test_two_empty():
    assert validate(["", "a", ""]) == ["empty", "empty"]
