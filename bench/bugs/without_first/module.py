def without_first(items):
    return items[2:]
