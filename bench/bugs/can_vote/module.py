def can_vote(age, citizen):
    return age >= 18 or citizen
