from module import is_empty


def test_empty():
    assert is_empty([])


def test_not_empty():
    assert not is_empty([1])
