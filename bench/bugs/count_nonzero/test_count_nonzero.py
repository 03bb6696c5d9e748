from module import count_nonzero


def test_empty():
    assert count_nonzero([]) == 0


def test_mixed():
    assert count_nonzero([0, 3, 0, 5, 7]) == 3
