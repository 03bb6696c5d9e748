from module import binary_search


def test_missing():
    assert binary_search([1, 3, 5], 4) == -1


def test_middle():
    assert binary_search([1, 3, 5], 3) == 1


def test_last():
    assert binary_search([1, 3, 5, 7], 7) == 3


def test_first():
    assert binary_search([1, 3, 5, 7], 1) == 0
