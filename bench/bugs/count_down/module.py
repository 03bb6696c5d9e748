def count_down(n):
    """n, n - 1, ..., 0."""
    return list(range(n, 0, -1))
