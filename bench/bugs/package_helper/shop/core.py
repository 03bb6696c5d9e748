from shop.util import nth_price


def cheapest_after_first(prices):
    """The second cheapest price."""
    return nth_price(sorted(prices), 1)
