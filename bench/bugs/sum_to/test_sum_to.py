from module import sum_to


def test_zero():
    assert sum_to(0) == 0


def test_four():
    assert sum_to(4) == 10
