def last_n(items, n):
    """The last n items (n <= len(items))."""
    return items[len(items) - n + 1:]
