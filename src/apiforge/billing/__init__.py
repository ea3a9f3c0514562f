"""RU wallets, the ledger, charging gateway calls, earnings, redemptions and withdrawals."""
