from module import is_adult


def test_older():
    assert is_adult(30)


def test_younger():
    assert not is_adult(10)


def test_exactly_eighteen():
    assert is_adult(18)
