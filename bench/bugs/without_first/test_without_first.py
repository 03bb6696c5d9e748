from module import without_first


def test_rest():
    assert without_first([1, 2, 3]) == [2, 3]
