def midpoint(low, high):
    """The middle index between two indices."""
    return (low + high) / 2


def middle_item(items):
    return items[midpoint(0, len(items) - 1)]
