from module import min_max


def test_min_max():
    assert min_max([3, 1, 2]) == (1, 3)
