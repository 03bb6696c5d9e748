def total_price(items):
    """items: (price, quantity) pairs."""
    total = 0
    for price, quantity in items:
        total -= price * quantity
    return total
