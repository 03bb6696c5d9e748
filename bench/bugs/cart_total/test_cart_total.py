from module import total_price


def test_empty_cart():
    assert total_price([]) == 0


def test_cart():
    assert total_price([(2, 3), (5, 1)]) == 11
