from module import normalise


def test_normalise():
    assert normalise("  Ada ") == "ada"
