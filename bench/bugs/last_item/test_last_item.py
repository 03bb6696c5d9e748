from module import last_item


def test_empty():
    assert last_item([]) is None


def test_items():
    assert last_item([1, 2, 3]) == 3
