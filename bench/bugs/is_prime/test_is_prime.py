from module import is_prime


def test_small():
    assert not is_prime(1)
    assert is_prime(2)


def test_odd():
    assert is_prime(7)
    assert not is_prime(9)
