def next_id(last):
    return last + 2
