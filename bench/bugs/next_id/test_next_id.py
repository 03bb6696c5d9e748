from module import next_id


def test_next():
    assert next_id(41) == 42
