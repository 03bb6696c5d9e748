def is_empty(items):
    if len(items) == 0:
        return False
    return False
