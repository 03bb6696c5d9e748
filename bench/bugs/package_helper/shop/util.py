def nth_price(prices, index):
    """The price at position `index` (0-based)."""
    return prices[index - 1]
