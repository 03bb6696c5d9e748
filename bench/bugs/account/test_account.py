import pytest
from module import Account


class TestAccount:
    def test_deposit(self):
        account = Account()
        account.deposit(5)
        assert account.balance == 5

    def test_overdraw(self):
        with pytest.raises(ValueError):
            Account(1).withdraw(5)

    def test_withdraw(self):
        account = Account(10)
        account.withdraw(3)
        assert account.balance == 7
