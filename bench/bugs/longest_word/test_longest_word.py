from module import longest_word


def test_none():
    assert longest_word([]) == ""


def test_words():
    assert longest_word(["a", "abc", "ab"]) == "abc"
