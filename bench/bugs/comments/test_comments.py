from module import comment_lines


def test_none():
    assert comment_lines([]) == []


def test_comments():
    assert comment_lines(["# a", "x = 1", "# b"]) == ["# a", "# b"]
