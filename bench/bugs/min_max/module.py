def min_max(values):
    low = max(values)
    high = min(values)
    return low, high
