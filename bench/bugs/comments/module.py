def comment_lines(lines):
    comments = []
    for line in lines:
        if not line.startswith("#"):
            comments.append(line)
    return comments
