from module import middle_item, midpoint


def test_midpoint():
    assert midpoint(2, 4) == 3


def test_middle_item():
    assert middle_item(["a", "b", "c", "d"]) == "b"
