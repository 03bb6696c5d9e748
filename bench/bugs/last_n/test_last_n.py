from module import last_n


def test_last_two():
    assert last_n([1, 2, 3, 4], 2) == [3, 4]


def test_all():
    assert last_n([1, 2], 2) == [1, 2]
