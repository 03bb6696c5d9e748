from module import full_name, join_name


def test_join():
    assert join_name("Ada", "Lovelace") == "Ada Lovelace"


def test_full_name():
    assert full_name({"first": "Alan", "last": "Turing"}) == "Alan Turing"
