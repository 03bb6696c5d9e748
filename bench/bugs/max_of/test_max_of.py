from module import max_of


def test_first_bigger():
    assert max_of(5, 2) == 5


def test_second_bigger():
    assert max_of(2, 5) == 5
