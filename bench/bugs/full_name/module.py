def join_name(first, last):
    return f"{first} {last}"


def full_name(person):
    return join_name(person["last"], person["first"])
