from module import mean


def test_mean():
    assert mean([2, 4]) == 3


def test_empty():
    assert mean([]) == 0
