def count_nonzero(values):
    return sum(1 for value in values if value == 0)
