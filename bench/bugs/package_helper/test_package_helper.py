from shop.core import cheapest_after_first
from shop.util import nth_price


def test_nth():
    assert nth_price([1, 2, 3], 0) == 1


def test_second_cheapest():
    assert cheapest_after_first([5, 1, 3]) == 3
