def max_of(a, b):
    if a > b:
        return a
    return a
